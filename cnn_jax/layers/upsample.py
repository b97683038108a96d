"""Parameter-free upsampling by interpolation."""

from collections.abc import Sequence

import flax.linen as nn
import jax

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
