"""RegNetY (Radosavovic et al., 2020): the designed network space of simple residual bottlenecks
with grouped 3x3 convolutions and squeeze-excitation, widths growing by a quantised linear rule.

RegNetY-400MF and -8GF, with the stage widths and depths the rule gives (the paper's Table 3 /
pycls): 4,344,144 and 39,381,472 parameters with 1000 classes.
"""

import functools
from typing import Any

import flax.linen as nn
import jax

from cnn_jax import layers as L
from cnn_jax.models.factories import conv_and_norm
from cnn_jax.models.registry import Preprocessing, Torchvision, Weights, image, register_model


class YBlock(nn.Module):
  """``relu(proj(x) + c(se(b(a(x)))))``: 1x1 -> grouped 3x3 (stride) -> squeeze-excitation (a
  quarter of the block's input width) -> 1x1, BatchNorm after each convolution."""
  features: int
  strides: int = 1
  group_width: int = 8
  se_ratio: float = 0.25
  conv: Any = L.Conv
  norm: Any = L.BatchNorm

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    unit = functools.partial(L.ConvNormAct, conv=self.conv, norm=self.norm)
    shortcut = x
    if self.strides != 1 or x.shape[-1] != self.features:
      shortcut = unit(self.features, 1, strides=self.strides, act=None, name='proj')(x, train)
    y = unit(self.features, 1, name='a')(x, train)
    y = unit(self.features, 3, strides=self.strides,
             feature_group_count=self.features // self.group_width, name='b')(y, train)
    y = L.SqueezeExcite(int(round(self.se_ratio * x.shape[-1])), name='se')(y)
    y = unit(self.features, 1, act=None, name='c')(y, train)
    return nn.relu(shortcut + y)


class RegNetY(nn.Module):
  """3x3/2 stem (32) -> four stages of `YBlock` (stride 2 first) -> pool -> linear.

  Attributes:
    depths: blocks per stage.
    widths: channels per stage.
    group_width: channels per group of the 3x3 convolutions.
  """
  depths: tuple[int, ...] = (1, 3, 6, 6)
  widths: tuple[int, ...] = (48, 104, 208, 440)
  group_width: int = 8
  num_classes: int = 1000
  axis_name: str | None = None
  dtype: Any = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    conv, norm = conv_and_norm(self.dtype, self.axis_name, 'HALF')
    x = L.ConvNormAct(32, 3, strides=2, conv=conv, norm=norm, name='stem')(x, train)
    for depth, width in zip(self.depths, self.widths):
      for index in range(depth):
        x = YBlock(width, 2 if index == 0 else 1, self.group_width, conv=conv, norm=norm)(x, train)
    return nn.Dense(self.num_classes, dtype=self.dtype, name='head')(L.global_avg_pool(x))


ORDER = ('stem', 'trunk_output', 'fc', 'proj', 'f', 'a', 'b', 'se', 'c')
V2 = Preprocessing(resize=232)

register_model('regnet_y_400mf', functools.partial(
    RegNetY, depths=(1, 3, 6, 6), widths=(48, 104, 208, 440), group_width=8), image(224), 'regnet',
               Torchvision((Weights('regnet_y_400mf-c65dace8.pth', 74.046),
                            Weights('regnet_y_400mf-e6988f5f.pth', 75.804, V2)), order=ORDER))
register_model('regnet_y_8gf', functools.partial(
    RegNetY, depths=(2, 4, 10, 1), widths=(224, 448, 896, 2016), group_width=56), image(224),
               'regnet', Torchvision((Weights('regnet_y_8gf-d0d0e4a8.pth', 80.032),
                                      Weights('regnet_y_8gf-dc2b1b54.pth', 82.828, V2)),
                                     order=ORDER))
