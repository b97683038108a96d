"""U-Net (Ronneberger, Fischer & Brox, 2015): a contracting path, an expanding path, and skips
that concatenate each encoder level's features into the decoder at the same resolution.

``levels`` is the number of resolutions (5 in the paper: 64 -> 1024 channels); adding a level adds
one more pooling, doubling the context the bottom layers see.
"""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnn_jax import layers as L
from cnn_jax.models.dense import check_divisible
from cnn_jax.models.factories import conv_and_norm
from cnn_jax.models.registry import image, register_model


@register_model('unet', input_shape=image(256, 1), classes=2)
class UNet(nn.Module):
  """[N, *S, C] -> per-pixel logits [N, *S, num_classes]; S multiples of ``2 ** (levels - 1)``.

  Attributes:
    num_classes: classes per pixel.
    levels: resolutions, including the bottom one.
    width: channels at the top level (doubling per level).
    batch_norm: BatchNorm after every 3x3 conv (the paper has none; it trains faster with).
  """
  num_classes: int = 2
  levels: int = 5
  width: int = 64
  batch_norm: bool = True
  axis_name: str | None = None
  dtype: Any = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    if self.levels < 1:
      raise ValueError(f'UNet(levels={self.levels}): needs at least one level.')
    check_divisible('UNet', x, 2 ** (self.levels - 1), 'levels - 1 max-pools')
    conv, norm = conv_and_norm(self.dtype, self.axis_name)
    unit = functools.partial(L.ConvNormAct, conv=conv, norm=norm if self.batch_norm else None)

    def double_conv(x, features, name):
      x = unit(features, 3, name=f'{name}_1')(x, train)
      return unit(features, 3, name=f'{name}_2')(x, train)

    skips = []
    for level in range(self.levels - 1):
      x = double_conv(x, self.width * 2 ** level, f'down{level + 1}')
      skips.append(x)
      x = L.max_pool(x, 2, strides=2)
    x = double_conv(x, self.width * 2 ** (self.levels - 1), 'bottom')
    for level in reversed(range(self.levels - 1)):
      features = self.width * 2 ** level
      x = L.ConvTranspose(features, 2, strides=2, dtype=self.dtype, name=f'upconv{level + 1}')(x)
      x = double_conv(jnp.concatenate([skips[level], x], axis=-1), features, f'up{level + 1}')
    return conv(self.num_classes, 1, name='classifier')(x)
