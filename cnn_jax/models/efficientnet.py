"""EfficientNet-B0..B3 (Tan & Le, 2019): MBConv + squeeze-excitation stages, compound-scaled.

B0 is the searched baseline; Bn scales its width (channels), depth (blocks per stage) and input
resolution together. Channels round to multiples of 8, block counts round up. With 1000 classes:
5,288,548 / 7,794,184 / 9,109,994 / 12,233,232 parameters and 0.39 / 0.70 / 1.0 / 1.8 G
multiply-adds at 224 / 240 / 260 / 300 pixels.
"""

import functools
import math
from typing import Any

import flax.linen as nn
import jax

from cnn_jax import layers as L
from cnn_jax.models.factories import conv_and_norm

# B0 stages: (expand ratio, kernel, stride, output channels, blocks).
STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
          (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))
# (width, depth, resolution, dropout) per variant.
SCALING = {'b0': (1.0, 1.0, 224, 0.2), 'b1': (1.0, 1.1, 240, 0.2), 'b2': (1.1, 1.2, 260, 0.3),
           'b3': (1.2, 1.4, 300, 0.3)}


def round_channels(channels: float, divisor: int = 8) -> int:
  """Nearest multiple of ``divisor``, never more than 10% below ``channels``."""
  rounded = max(divisor, int(channels + divisor / 2) // divisor * divisor)
  return rounded + divisor if rounded < 0.9 * channels else rounded


class EfficientNet(nn.Module):
  """stem 3x3/2 -> 7 MBConv stages -> 1x1 conv to 4x the last width -> pool -> dropout -> linear.

  Attributes:
    width: channel multiplier.
    depth: block-count multiplier.
    dropout: before the classifier.
    drop_rate: stochastic depth, growing linearly to this over the blocks.
  """
  num_classes: int = 1000
  width: float = 1.0
  depth: float = 1.0
  dropout: float = 0.2
  drop_rate: float = 0.2
  axis_name: str | None = None
  dtype: Any = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    conv, norm = conv_and_norm(self.dtype, self.axis_name)
    unit = functools.partial(L.ConvNormAct, conv=conv, norm=norm, act=nn.swish)
    x = unit(round_channels(32 * self.width), 3, strides=2, name='stem')(x, train)
    repeats = [math.ceil(blocks * self.depth) for *_, blocks in STAGES]
    total, index = sum(repeats), 0
    for (expand, kernel, stride, features, _), count in zip(STAGES, repeats):
      for position in range(count):
        x = L.MBConv(round_channels(features * self.width), expand, kernel,
                     stride if position == 0 else 1, drop_rate=self.drop_rate * index / total,
                     conv=conv, norm=norm)(x, train)
        index += 1
    x = unit(4 * round_channels(STAGES[-1][3] * self.width), 1, name='head_conv')(x, train)
    x = nn.Dropout(self.dropout, deterministic=not train)(L.global_avg_pool(x))
    return nn.Dense(self.num_classes, dtype=self.dtype, name='head')(x)


def efficientnet(variant: str) -> functools.partial:
  width, depth, _, dropout = SCALING[variant]
  return functools.partial(EfficientNet, width=width, depth=depth, dropout=dropout)
