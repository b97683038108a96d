"""TFDS builder of procedurally generated segmentation scenes: shapes on textured backgrounds.

Each 64x64 RGB image holds one to three circles, squares and triangles of random size, position,
rotation and colour, each with its own faint texture, drawn (later ones on top) over a background
of two random colour gratings plus noise. The label gives every pixel's class: 0 background,
1 circle, 2 square, 3 triangle. Generated from fixed seeds, so every preparation is identical.
"""

import numpy as np
import tensorflow_datasets as tfds

from cnn_jax.data.registry import register_dataset

SIZE = 64
CLASSES = ('background', 'circle', 'square', 'triangle')
SPLITS = {'train': (4000, 0), 'test': (1000, 1)}  # examples, seed


def _grating(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
  """[S, S, 3] in [0, 1]: a random-orientation, random-frequency stripe pattern in two colours."""
  angle, period = rng.uniform(0, np.pi), rng.uniform(4, 16)
  wave = 0.5 + 0.5 * np.sin(2 * np.pi * (np.cos(angle) * xx + np.sin(angle) * yy) / period
                            + rng.uniform(0, 2 * np.pi))
  low, high = rng.uniform(0, 1, (2, 3))
  return low + wave[..., None] * (high - low)


def _shape_mask(kind: int, rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
  radius = rng.uniform(8, 17)
  cy, cx = rng.uniform(radius * 0.7, SIZE - radius * 0.7, 2)
  angle = rng.uniform(0, 2 * np.pi)
  u = np.cos(angle) * (xx - cx) + np.sin(angle) * (yy - cy)
  v = -np.sin(angle) * (xx - cx) + np.cos(angle) * (yy - cy)
  if kind == 1:
    return u ** 2 + v ** 2 <= radius ** 2
  if kind == 2:
    return np.maximum(np.abs(u), np.abs(v)) <= radius * 0.8
  # Equilateral triangle: inside all three edges at distance radius / 2 from the centre.
  normals = [(np.cos(a), np.sin(a)) for a in np.pi / 2 + np.arange(3) * 2 * np.pi / 3]
  return np.all([nu * u + nv * v <= radius / 2 for nu, nv in normals], axis=0)


def render(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """One scene: ``(image [S, S, 3] uint8, label [S, S] uint8)``."""
  yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
  image = 0.5 * (_grating(rng, yy, xx) + _grating(rng, yy, xx))
  label = np.zeros((SIZE, SIZE), np.uint8)
  for _ in range(rng.integers(1, 4)):
    kind = int(rng.integers(1, len(CLASSES)))
    mask = _shape_mask(kind, rng, yy, xx)
    fill = rng.uniform(0, 1, 3) + 0.15 * (_grating(rng, yy, xx) - 0.5)
    image[mask] = fill[mask]
    label[mask] = kind
  image = image + rng.normal(0, 0.05, image.shape)
  return np.clip(np.rint(image * 255), 0, 255).astype(np.uint8), label


@register_dataset('shapes')
class Shapes(tfds.core.GeneratorBasedBuilder):
  """64x64x3 uint8 scenes with [64, 64] per-pixel labels in 0..3."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': '4,000 train (seed 0) and 1,000 test (seed 1) scenes.'}
  NUM_CLASSES = len(CLASSES)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description='Circles, squares and triangles on textured backgrounds, labelled per pixel.',
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Tensor(shape=(SIZE, SIZE, 3), dtype=np.uint8),
            'label': tfds.features.Tensor(shape=(SIZE, SIZE), dtype=np.uint8),
        }),
        supervised_keys=('image', 'label'),
    )

  def _split_generators(self, dl_manager):
    return {split: self._generate_examples(count, seed)
            for split, (count, seed) in SPLITS.items()}

  def _generate_examples(self, count: int, seed: int):
    rng = np.random.default_rng(seed)
    for index in range(count):
      image, label = render(rng)
      yield index, {'image': image, 'label': label}
