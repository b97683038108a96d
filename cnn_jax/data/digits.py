"""TFDS builder of scikit-learn's 1,797 real 8x8 handwritten digits (UCI), prepared offline."""

import numpy as np
import tensorflow_datasets as tfds

from cnn_jax.data.registry import register_dataset

# A fixed split: the first 1,397 digits train, the last 400 test (the writers of the two parts
# overlap, as in sklearn's ordering; the split never changes between runs).
TRAIN_SIZE = 1397


@register_dataset('digits')
class Digits(tfds.core.GeneratorBasedBuilder):
  """8x8 grayscale digits 0-9, pixel values 0-16 rescaled to 0-255 (uint8)."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'sklearn.datasets.load_digits, train = first 1,397, test = last 400.'}

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description='Optical recognition of handwritten digits (UCI), via scikit-learn.',
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Tensor(shape=(8, 8, 1), dtype=np.uint8),
            'label': tfds.features.ClassLabel(num_classes=10),
        }),
        supervised_keys=('image', 'label'),
    )

  def _split_generators(self, dl_manager):
    from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
    digits = load_digits()
    images = np.round(digits.images * (255 / 16)).astype(np.uint8)[..., None]
    return {
        'train': self._generate_examples(images[:TRAIN_SIZE], digits.target[:TRAIN_SIZE]),
        'test': self._generate_examples(images[TRAIN_SIZE:], digits.target[TRAIN_SIZE:]),
    }

  def _generate_examples(self, images, labels):
    for index, (image, label) in enumerate(zip(images, labels)):
      yield index, {'image': image, 'label': int(label)}
