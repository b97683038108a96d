"""Upsampling by interpolation, and the kernel that makes a transposed conv start as one."""

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cnn_jax import arithmetic

METHODS = ('nearest', 'bilinear', 'bicubic')


class Upsample(nn.Module):
  """Resizes the spatial dims of [N, *S, C] by ``scale_factor`` with `jax.image.resize`.

  'bilinear' and 'bicubic' (Keys, a=-0.5) use half-pixel centres, like PyTorch's
  ``align_corners=False``; 'nearest' repeats each value ``scale_factor`` times for integer factors.
  ('bilinear' is linear interpolation in every spatial dim, trilinear in 3-D.)

  Attributes:
    scale_factor: one positive int for all spatial dims, or one per dim.
    method: 'nearest', 'bilinear' or 'bicubic'.
  """
  scale_factor: int | Sequence[int] = 2
  method: str = 'nearest'

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if self.method not in METHODS:
      raise ValueError(f'Upsample(method={self.method!r}): expected one of {METHODS}.')
    scale = arithmetic.as_tuple(self.scale_factor, x.ndim - 2, 'scale_factor')
    shape = (x.shape[0], *(n * s for n, s in zip(x.shape[1:-1], scale)), x.shape[-1])
    return jax.image.resize(x, shape, method=self.method)


def bilinear_kernel_init(key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
  """Initialises a `ConvTranspose` kernel [*k, features, C] as per-channel linear interpolation.

  With ``kernel_size = 2 * s``, ``strides = s`` and ``padding = s // 2`` (even ``s``), the
  transposed convolution then starts as bilinear upsampling by ``s`` (away from the borders), the
  FCN initialisation of its learned upsampling layers. Needs ``features == C``.
  """
  del key  # deterministic
  *kernel_size, features, channels = shape
  if features != channels:
    raise ValueError(f'bilinear_kernel_init: kernel shape {tuple(shape)} maps {channels} channels '
                     f'to {features}; interpolation needs as many outputs as inputs: give the ConvTranspose '
                     f'features={channels}.')
  taps = []
  for size in kernel_size:
    factor = (size + 1) // 2
    centre = factor - 1 if size % 2 else factor - 0.5
    taps.append(1 - np.abs(np.arange(size) - centre) / factor)
  window = jnp.asarray(functools.reduce(np.multiply.outer, taps), dtype)
  # jnp, not numpy: under jax.eval_shape the [*k, C, C] kernel is then never materialised.
  return window[..., None, None] * jnp.eye(channels, dtype=dtype)
