"""TFDS builder of DNA sequences with a planted binding motif (a DeepBind-style task).

One fixed motif, a position weight matrix (PWM) of ``MOTIF_LENGTH`` columns drawn from a sparse
Dirichlet (each column favours one or two bases). Every sequence is ``LENGTH`` uniform random
bases with one ``MOTIF_LENGTH``-mer planted at a random position: for a binding sequence (label 1)
sampled from the PWM, for a non-binding one (label 0) from the PWM with its columns shuffled - a
decoy with the same base composition, so only the motif's order tells the classes apart.
Sequences are one-hot [LENGTH, 4] over A, C, G, T.
"""

import numpy as np
import tensorflow_datasets as tfds

from cnn_jax.data.registry import register_dataset

LENGTH = 101
MOTIF_LENGTH = 12
BASES = 'ACGT'
SPLITS = {'train': (8000, 1), 'test': (2000, 2)}  # examples, seed


def motif_pwm() -> np.ndarray:
  """The planted motif: [MOTIF_LENGTH, 4] base probabilities per position (rows sum to 1)."""
  return np.random.default_rng(2015).dirichlet(np.full(4, 0.1), size=MOTIF_LENGTH)


def _sample(pwm: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  cumulative = pwm.cumsum(-1)
  return (rng.random((len(pwm), 1)) > cumulative).sum(-1).clip(0, 3)


def generate(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """``(one_hot [count, LENGTH, 4] float32, labels [count] int)``, half of them binding."""
  rng = np.random.default_rng(seed)
  pwm = motif_pwm()
  bases = rng.integers(0, 4, (count, LENGTH))
  labels = rng.permutation(np.arange(count) % 2)
  for index, label in enumerate(labels):
    source = pwm if label else pwm[rng.permutation(MOTIF_LENGTH)]
    start = rng.integers(0, LENGTH - MOTIF_LENGTH + 1)
    bases[index, start:start + MOTIF_LENGTH] = _sample(source, rng)
  return np.eye(4, dtype=np.float32)[bases], labels


@register_dataset('motifs')
class Motifs(tfds.core.GeneratorBasedBuilder):
  """[101, 4] float32 one-hot DNA, 2 classes (0: decoy only, 1: motif planted)."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': '8,000 train (seed 1) and 2,000 test (seed 2) sequences.'}

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description='Random DNA with a planted motif (binding) or a shuffled-motif decoy.',
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Tensor(shape=(LENGTH, 4), dtype=np.float32),
            'label': tfds.features.ClassLabel(names=['non_binding', 'binding']),
        }),
        supervised_keys=('image', 'label'),
    )

  def _split_generators(self, dl_manager):
    return {split: self._generate_examples(count, seed)
            for split, (count, seed) in SPLITS.items()}

  def _generate_examples(self, count: int, seed: int):
    sequences, labels = generate(count, seed)
    for index, (sequence, label) in enumerate(zip(sequences, labels)):
      yield index, {'image': sequence, 'label': int(label)}
