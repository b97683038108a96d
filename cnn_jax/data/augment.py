"""Vectorised numpy augmentation of whole batches (one numpy call per batch, not per image).

Every function takes a batch ``x`` of shape [B, *spatial, C] and a ``np.random.Generator``.
"""

import numpy as np


def random_crop(x: np.ndarray, rng: np.random.Generator, padding: int) -> np.ndarray:
  """Pads every spatial side by ``padding`` (zeros) and crops a random window of the input size."""
  batch, spatial = x.shape[0], x.shape[1:-1]
  padded = np.pad(x, [(0, 0)] + [(padding, padding)] * len(spatial) + [(0, 0)])
  offsets = rng.integers(0, 2 * padding + 1, size=(batch, len(spatial)))
  index = [np.arange(batch).reshape(-1, *[1] * len(spatial))]
  for axis, size in enumerate(spatial):
    shape = [1] * len(spatial)
    shape[axis] = size
    index.append(offsets[:, axis].reshape(-1, *[1] * len(spatial)) + np.arange(size).reshape(shape))
  return padded[tuple(index)]


def random_flip(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """Mirrors a random half of the images left-right (the last spatial axis)."""
  flip = rng.random(x.shape[0]) < 0.5
  out = x.copy()
  out[flip] = x[flip][..., ::-1, :]
  return out


def random_affine(x: np.ndarray, rng: np.random.Generator, max_degrees: float,
                  scale_range: tuple[float, float]) -> np.ndarray:
  """Rotates each 2-D image by a random angle and rescales it about its centre (nearest pixel)."""
  batch, height, width = x.shape[:3]
  angle = np.deg2rad(rng.uniform(-max_degrees, max_degrees, batch))
  scale = rng.uniform(*scale_range, batch)
  rows, cols = np.meshgrid(np.arange(height) - (height - 1) / 2, np.arange(width) - (width - 1) / 2,
                           indexing='ij')
  cos, sin = (np.cos(angle) / scale)[:, None, None], (np.sin(angle) / scale)[:, None, None]
  # Inverse map: for every output pixel, the input pixel it comes from.
  src_r = np.rint(cos * rows + sin * cols + (height - 1) / 2).astype(int)
  src_c = np.rint(-sin * rows + cos * cols + (width - 1) / 2).astype(int)
  inside = (src_r >= 0) & (src_r < height) & (src_c >= 0) & (src_c < width)
  out = x[np.arange(batch)[:, None, None], np.clip(src_r, 0, height - 1), np.clip(src_c, 0, width - 1)]
  return np.where(inside[..., None], out, 0).astype(x.dtype)


def random_shift(x: np.ndarray, rng: np.random.Generator, max_shift: int) -> np.ndarray:
  """Shifts each 1-D sequence [B, L, C] by a random offset in [-max_shift, max_shift], zero-filled."""
  batch, length = x.shape[:2]
  shift = rng.integers(-max_shift, max_shift + 1, batch)
  source = np.arange(length)[None, :] - shift[:, None]
  inside = (source >= 0) & (source < length)
  out = x[np.arange(batch)[:, None], np.clip(source, 0, length - 1)]
  return np.where(inside[..., None], out, 0).astype(x.dtype)
