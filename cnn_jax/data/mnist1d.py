"""TFDS builder of MNIST-1D (Greydanus, 2020): 1-D digit templates, shifted, scaled, sheared, noised.

Generated offline by the `mnist1d` package with the paper's default arguments: 4,000 train and
1,000 test sequences of length 40. Published test accuracy: logistic 32%, MLP 68%, CNN 94%,
GRU 91%, human 96%.
"""

import numpy as np
import tensorflow_datasets as tfds

from cnn_jax.data.registry import register_dataset

LENGTH = 40


@register_dataset('mnist1d')
class Mnist1d(tfds.core.GeneratorBasedBuilder):
  """[40, 1] float32 sequences, 10 classes."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'mnist1d.make_dataset(get_dataset_args()), the paper default.'}

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description='MNIST-1D, a procedurally generated 1-D analogue of MNIST.',
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Tensor(shape=(LENGTH, 1), dtype=np.float32),
            'label': tfds.features.ClassLabel(num_classes=10),
        }),
        supervised_keys=('image', 'label'),
    )

  def _split_generators(self, dl_manager):
    from mnist1d.data import get_dataset_args, make_dataset  # pylint: disable=g-import-not-at-top
    data = make_dataset(get_dataset_args())
    return {
        'train': self._generate_examples(data['x'], data['y']),
        'test': self._generate_examples(data['x_test'], data['y_test']),
    }

  def _generate_examples(self, sequences, labels):
    for index, (sequence, label) in enumerate(zip(sequences, labels)):
      yield index, {'image': np.asarray(sequence, np.float32)[:, None], 'label': int(label)}
