"""Augmentations by name: each a small function registered with the stage it runs in, listed in
order by ``config.data.augment.ops`` and parameterised by the other fields of
``config.data.augment``.

Stages, in the order they apply:

* ``decode``: one example, encoded or decoded, of any size -> [size, size, C] uint8 (at most one
  such op: it makes variable-size images into a batch).
* ``example``: one [H, W, C] uint8 image and a ``np.random.Generator``.
* ``batch``: a whole batch [B, *spatial, C] at once with vectorised numpy.
* ``step``: inside the jitted train step on the devices, mixing examples and their labels
  (`cnn_jax.data.mixing`).

A new augmentation is one function with ``@register(name, stage)`` in a module that
``cnn_jax.data`` imports (docs/extending.md).
"""

import dataclasses
from collections.abc import Callable

import cv2
import ml_collections
import numpy as np

from cnn_jax.data import images
from cnn_jax.errors import ConfigError

STAGES = ('decode', 'example', 'batch', 'step')


@dataclasses.dataclass(frozen=True)
class Augmentation:
  name: str
  stage: str
  fn: Callable
  spatial_rank: int | None  # the examples' spatial rank it needs; None: any


AUGMENTATIONS: dict[str, Augmentation] = {}


def register(name: str, stage: str, spatial_rank: int | None = None) -> Callable:
  """Registers the decorated function as augmentation ``name`` of ``stage``."""
  assert stage in STAGES, stage

  def add(fn: Callable) -> Callable:
    AUGMENTATIONS[name] = Augmentation(name, stage, fn, spatial_rank)
    return fn

  return add


def plan(ops, spatial_rank: int | None = None) -> dict[str, list[Augmentation]]:
  """The augmentations ``ops`` names, by stage, in their listed order.

  Raises:
    ConfigError: an unknown name, two ``decode`` ops, or an op for another spatial rank.
  """
  stages = {stage: [] for stage in STAGES}
  for name in ops:
    if name not in AUGMENTATIONS:
      raise ConfigError(f'config.data.augment.ops names {name!r}: expected any of '
                        f'{sorted(AUGMENTATIONS)} (docs/data.md describes each).')
    op = AUGMENTATIONS[name]
    if spatial_rank is not None and op.spatial_rank not in (None, spatial_rank):
      raise ConfigError(f'config.data.augment.ops names {name!r}, which works on examples with '
                        f'{op.spatial_rank} spatial dims; these have {spatial_rank}. Remove it.')
    stages[op.stage].append(op)
  if len(stages['decode']) > 1:
    raise ConfigError(f'config.data.augment.ops names {len(stages["decode"])} cropping ops '
                      f'({", ".join(op.name for op in stages["decode"])}); keep one.')
  return stages


# -- decode ----------------------------------------------------------------------------------

@register('inception_crop', 'decode', spatial_rank=2)
def inception_crop(image, rng: np.random.Generator, params: ml_collections.ConfigDict,
                   size: int, channels: int) -> np.ndarray:
  """A random box of ``params.area_range`` of the area and ``params.aspect_range`` aspect
  (RandomResizedCrop), resized to ``size`` x ``size``; only the box is resized."""
  box = images.inception_box(rng, *images.size(image), tuple(params.area_range),
                             tuple(params.aspect_range))
  return images.crop_and_resize(image, box, size, channels)


# -- example ---------------------------------------------------------------------------------

def _blend(image: np.ndarray, other: np.ndarray | float, factor: float) -> np.ndarray:
  return other + factor * (image - other)


@register('color_jitter', 'example')
def color_jitter(image: np.ndarray, rng: np.random.Generator,
                 params: ml_collections.ConfigDict) -> np.ndarray:
  """Brightness, contrast and saturation, each scaled by a factor drawn from
  [1 - params.jitter, 1 + params.jitter], in a random order (torchvision's ColorJitter)."""
  x = image.astype(np.float32)
  factors = rng.uniform(1 - params.jitter, 1 + params.jitter, 3)
  for which in rng.permutation(3):
    if which == 0:
      x = _blend(x, 0.0, factors[0])
    elif which == 1:
      x = _blend(x, float(_gray(x).mean()), factors[1])
    elif image.shape[-1] == 3:
      x = _blend(x, _gray(x)[..., None], factors[2])
    x = np.clip(x, 0, 255)
  return np.round(x).astype(np.uint8)


def _gray(x: np.ndarray) -> np.ndarray:
  """ITU-R 601 luma, as PIL's and torchvision's grayscale."""
  if x.shape[-1] == 1:
    return x[..., 0]
  return x @ np.asarray([0.299, 0.587, 0.114], np.float32)


@register('random_erasing', 'example')
def random_erasing(image: np.ndarray, rng: np.random.Generator,
                   params: ml_collections.ConfigDict) -> np.ndarray:
  """With probability ``params.erasing_prob``, a random box of 2-33% of the area and aspect
  0.3-3.3 replaced by uniform noise (Zhong et al., 2017)."""
  if rng.random() >= params.erasing_prob:
    return image
  height, width = image.shape[:2]
  top, left, h, w = images.inception_box(rng, height, width, (0.02, 1 / 3), (0.3, 1 / 0.3))
  out = image.copy()
  out[top:top + h, left:left + w] = rng.integers(0, 256, (h, w, image.shape[-1]), np.uint8)
  return out


# -- batch -----------------------------------------------------------------------------------

@register('random_crop', 'batch')
def random_crop(x: np.ndarray, rng: np.random.Generator,
                params: ml_collections.ConfigDict) -> np.ndarray:
  """Pads every spatial side by ``params.crop_padding`` (zeros) and crops a random window of the
  input size."""
  padding = params.crop_padding
  batch, spatial = x.shape[0], x.shape[1:-1]
  padded = np.pad(x, [(0, 0)] + [(padding, padding)] * len(spatial) + [(0, 0)])
  offsets = rng.integers(0, 2 * padding + 1, size=(batch, len(spatial)))
  index = [np.arange(batch).reshape(-1, *[1] * len(spatial))]
  for axis, size in enumerate(spatial):
    shape = [1] * len(spatial)
    shape[axis] = size
    index.append(offsets[:, axis].reshape(-1, *[1] * len(spatial)) + np.arange(size).reshape(shape))
  return padded[tuple(index)]


@register('flip', 'batch')
def random_flip(x: np.ndarray, rng: np.random.Generator,
                params: ml_collections.ConfigDict | None = None) -> np.ndarray:
  """Mirrors a random half of the examples along their last spatial axis (left-right)."""
  del params
  flip = rng.random(x.shape[0]) < 0.5
  out = x.copy()
  for index in np.flatnonzero(flip):
    out[index] = _mirror(x[index])
  return out


def _mirror(example: np.ndarray) -> np.ndarray:
  # OpenCV flips [H, W, C] images and [L, C] sequences many times faster than numpy's
  # reversed-stride copy of the few bytes of each pixel.
  if example.ndim in (2, 3) and example.dtype in (np.uint8, np.float32) and example.shape[-1] <= 4:
    return cv2.flip(example, 1 if example.ndim == 3 else 0).reshape(example.shape)
  return example[..., ::-1, :]


@register('affine', 'batch', spatial_rank=2)
def random_affine(x: np.ndarray, rng: np.random.Generator,
                  params: ml_collections.ConfigDict) -> np.ndarray:
  """Rotates each 2-D image by a random angle up to ``params.rotate_degrees`` and rescales it
  about its centre by a factor in ``params.scale`` (nearest pixel)."""
  batch, height, width = x.shape[:3]
  angle = np.deg2rad(rng.uniform(-params.rotate_degrees, params.rotate_degrees, batch))
  scale = rng.uniform(*tuple(params.scale), batch)
  rows, cols = np.meshgrid(np.arange(height) - (height - 1) / 2, np.arange(width) - (width - 1) / 2,
                           indexing='ij')
  cos, sin = (np.cos(angle) / scale)[:, None, None], (np.sin(angle) / scale)[:, None, None]
  # Inverse map: for every output pixel, the input pixel it comes from.
  src_r = np.rint(cos * rows + sin * cols + (height - 1) / 2).astype(int)
  src_c = np.rint(-sin * rows + cos * cols + (width - 1) / 2).astype(int)
  inside = (src_r >= 0) & (src_r < height) & (src_c >= 0) & (src_c < width)
  out = x[np.arange(batch)[:, None, None], np.clip(src_r, 0, height - 1), np.clip(src_c, 0, width - 1)]
  return np.where(inside[..., None], out, 0).astype(x.dtype)


@register('shift', 'batch', spatial_rank=1)
def random_shift(x: np.ndarray, rng: np.random.Generator,
                 params: ml_collections.ConfigDict) -> np.ndarray:
  """Shifts each 1-D sequence [B, L, C] by a random offset in [-params.shift, params.shift],
  zero-filled."""
  batch, length = x.shape[:2]
  shift = rng.integers(-params.shift, params.shift + 1, batch)
  source = np.arange(length)[None, :] - shift[:, None]
  inside = (source >= 0) & (source < length)
  out = x[np.arange(batch)[:, None], np.clip(source, 0, length - 1)]
  return np.where(inside[..., None], out, 0).astype(x.dtype)
