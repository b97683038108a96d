"""ConvNeXt (Liu et al., 2022): a ResNet modernised towards vision transformers.

A 4x4/4 "patchify" stem, four stages of ConvNeXt blocks (7x7 depthwise conv -> LayerNorm -> 1x1
to 4x -> GELU -> 1x1 back, scaled by a learned per-channel layer scale, with stochastic depth),
LayerNorm + 2x2/2 conv between stages, global pool -> LayerNorm -> linear. No BatchNorm. With 1000
classes ConvNeXt-T/S/B have 28,589,128 / 50,223,688 / 88,591,464 parameters.
"""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnn_jax import layers as L
from cnn_jax.models.registry import Preprocessing, Torchvision, Weights, image, register_model

LayerNorm = functools.partial(nn.LayerNorm, epsilon=1e-6)


class ConvNeXtBlock(nn.Module):
  """``x + drop_path(gamma * pointwise(GELU(pointwise(LN(depthwise7x7(x))))))``."""
  layer_scale: float = 1e-6
  drop_rate: float = 0.0
  dtype: Any = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    channels = x.shape[-1]
    gamma = self.param('layer_scale', nn.initializers.constant(self.layer_scale), (channels,))
    y = L.Conv(channels, 7, padding='HALF', feature_group_count=channels, dtype=self.dtype,
               name='depthwise')(x)
    y = LayerNorm(dtype=self.dtype)(y)
    y = nn.gelu(nn.Dense(4 * channels, dtype=self.dtype, name='expand')(y), approximate=False)
    y = nn.Dense(channels, dtype=self.dtype, name='project')(y)
    return x + L.StochasticDepth(self.drop_rate)(jnp.asarray(gamma, y.dtype) * y,
                                                 deterministic=not train)


class ConvNeXt(nn.Module):
  """Attributes:
    depths: blocks per stage.
    widths: channels per stage.
    num_classes: outputs.
    drop_rate: stochastic depth, growing linearly from 0 to this over the blocks.
    layer_scale: the layer scales' initial value.
  """
  depths: tuple[int, ...] = (3, 3, 9, 3)
  widths: tuple[int, ...] = (96, 192, 384, 768)
  num_classes: int = 1000
  drop_rate: float = 0.1
  layer_scale: float = 1e-6
  dtype: Any = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    x = L.Conv(self.widths[0], 4, strides=4, padding='VALID', dtype=self.dtype, name='stem')(x)
    x = LayerNorm(dtype=self.dtype, name='stem_norm')(x)
    total, index = sum(self.depths), 0
    for stage, (depth, width) in enumerate(zip(self.depths, self.widths)):
      if stage:
        x = LayerNorm(dtype=self.dtype, name=f'downsample{stage}_norm')(x)
        x = L.Conv(width, 2, strides=2, padding='VALID', dtype=self.dtype,
                   name=f'downsample{stage}')(x)
      for _ in range(depth):
        x = ConvNeXtBlock(self.layer_scale, self.drop_rate * index / max(total - 1, 1),
                          self.dtype)(x, train)
        index += 1
    x = LayerNorm(dtype=self.dtype, name='head_norm')(L.global_avg_pool(x))
    return nn.Dense(self.num_classes, dtype=self.dtype, name='head')(x)


VARIANTS = {
    'tiny': ((3, 3, 9, 3), (96, 192, 384, 768), 0.1,
             Weights('convnext_tiny-983f1562.pth', 82.52, Preprocessing(resize=236))),
    'small': ((3, 3, 27, 3), (96, 192, 384, 768), 0.4,
              Weights('convnext_small-0c510722.pth', 83.616, Preprocessing(resize=230))),
    'base': ((3, 3, 27, 3), (128, 256, 512, 1024), 0.5,
             Weights('convnext_base-6075fbad.pth', 84.062, Preprocessing(resize=232))),
}

for _variant, (_depths, _widths, _drop, _weights) in VARIANTS.items():
  register_model(f'convnext_{_variant}', functools.partial(
      ConvNeXt, depths=_depths, widths=_widths, drop_rate=_drop), image(224), 'convnext',
                 Torchvision((_weights,)))
