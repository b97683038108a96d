"""ResNets (He et al., 2016): basic-block and bottleneck variants, ImageNet and CIFAR stems."""

import functools
from typing import Any

import flax.linen as nn
import jax

from cnn_jax import layers as L
from cnn_jax.models.factories import conv_and_norm


class ResNet(nn.Module):
  """Stem -> stages of residual blocks (stride 2 at each new stage) -> global pool -> linear.

  Attributes:
    stage_sizes: blocks per stage.
    block: `L.ResidualBlock` or `L.BottleneckBlock` (or a partial of one).
    num_classes: outputs.
    width: channels of the first stage (doubling per stage).
    stem: 'imagenet' (7x7/2 conv + 3x3/2 max-pool) or 'cifar' (one 3x3 conv, no pooling).
    axis_name: BatchNorm's cross-device axis in per-device (pmap-style) training.
  """
  stage_sizes: tuple[int, ...]
  block: Any = L.ResidualBlock
  num_classes: int = 1000
  width: int = 64
  stem: str = 'imagenet'
  axis_name: str | None = None
  dtype: Any = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    conv, norm = conv_and_norm(self.dtype, self.axis_name)
    if self.stem == 'imagenet':
      x = L.ConvNormAct(self.width, 7, strides=2, conv=conv, norm=norm, name='stem')(x, train)
      x = L.max_pool(x, 3, strides=2, padding='SAME')
    else:
      x = L.ConvNormAct(self.width, 3, conv=conv, norm=norm, name='stem')(x, train)
    for stage, size in enumerate(self.stage_sizes):
      for index in range(size):
        strides = 2 if stage > 0 and index == 0 else 1
        x = self.block(self.width * 2 ** stage, strides=strides, conv=conv, norm=norm)(x, train)
    x = L.global_avg_pool(x)
    return nn.Dense(self.num_classes, dtype=self.dtype, name='head')(x)


ResNet18 = functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), block=L.ResidualBlock)
ResNet34 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block=L.ResidualBlock)
ResNet50 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block=L.BottleneckBlock)
