"""EfficientNet-B0..B3 (Tan & Le, 2019): MBConv + squeeze-excitation stages, compound-scaled;
EfficientNetV2-S (Tan & Le, 2021): fused MBConv in the early stages, 21,458,488 parameters.

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
from cnn_jax.models.factories import conv_and_norm, round_channels
from cnn_jax.models.registry import Preprocessing, Torchvision, Weights, image, register_model

# B0 stages: (expand ratio, kernel, stride, output channels, blocks).
STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
          (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))
# (width, depth, resolution, dropout) per variant.
SCALING = {'b0': (1.0, 1.0, 224, 0.2), 'b1': (1.0, 1.1, 240, 0.2), 'b2': (1.1, 1.2, 260, 0.3),
           'b3': (1.2, 1.4, 300, 0.3)}


class EfficientNet(nn.Module):
  """stem 3x3/2 -> 7 MBConv stages -> 1x1 conv to 4x the last width -> pool -> dropout -> linear.

  Attributes:
    width: channel multiplier.
    depth: block-count multiplier.
    dropout: before the classifier.
    drop_rate: stochastic depth, growing linearly to this over the blocks.
    padding: of every convolution: 'SAME', or 'HALF' (torchvision's).
  """
  num_classes: int = 1000
  width: float = 1.0
  depth: float = 1.0
  dropout: float = 0.2
  drop_rate: float = 0.2
  padding: str = 'SAME'
  axis_name: str | None = None
  dtype: Any = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    conv, norm = conv_and_norm(self.dtype, self.axis_name, self.padding)
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


# torchvision's weights (ported from timm), evaluated with bicubic resizing.
WEIGHTS = {'b0': Weights('efficientnet_b0_rwightman-7f5810bc.pth', 77.692,
                         Preprocessing(256, 224, 'bicubic')),
           'b1': Weights('efficientnet_b1_rwightman-bac287d4.pth', 78.642,
                         Preprocessing(256, 240, 'bicubic')),
           'b2': Weights('efficientnet_b2_rwightman-c35c1473.pth', 80.608,
                         Preprocessing(288, 288, 'bicubic')),
           'b3': Weights('efficientnet_b3_rwightman-b3899882.pth', 82.008,
                         Preprocessing(320, 300, 'bicubic'))}

for _variant, (*_, _resolution, _) in SCALING.items():
  register_model(f'efficientnet_{_variant}', efficientnet(_variant), image(_resolution),
                 'efficientnet', Torchvision(
                     (WEIGHTS[_variant],), overrides={'padding': 'HALF'},
                     note="padding='HALF': torchvision pads strided convolutions symmetrically"))


# V2-S stages: (fused, expand ratio, stride, output channels, blocks); all kernels 3x3.
V2_S_STAGES = ((True, 1, 1, 24, 2), (True, 4, 2, 48, 4), (True, 4, 2, 64, 4), (False, 4, 2, 128, 6),
               (False, 6, 1, 160, 9), (False, 6, 2, 256, 15))


@register_model('efficientnet_v2_s', input_shape=image(384), family='efficientnet',
                torchvision=Torchvision((Weights('efficientnet_v2_s-dd5fe13b.pth', 84.228,
                                                 Preprocessing(384, 384)),)))
class EfficientNetV2(nn.Module):
  """stem 3x3/2 (24) -> fused-MBConv and MBConv stages -> 1x1 conv to 1280 -> pool -> dropout ->
  linear. BatchNorm epsilon 1e-3 and padding as torchvision's.

  Attributes:
    stages: (fused, expand ratio, stride, output channels, blocks) per stage.
    dropout: before the classifier.
    drop_rate: stochastic depth, growing linearly to this over the blocks.
  """
  num_classes: int = 1000
  stages: tuple[tuple, ...] = V2_S_STAGES
  dropout: float = 0.2
  drop_rate: float = 0.2
  axis_name: str | None = None
  dtype: Any = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    conv, norm = conv_and_norm(self.dtype, self.axis_name, 'HALF', epsilon=1e-3)
    unit = functools.partial(L.ConvNormAct, conv=conv, norm=norm, act=nn.swish)
    x = unit(self.stages[0][3], 3, strides=2, name='stem')(x, train)
    total, index = sum(stage[-1] for stage in self.stages), 0
    for fused, expand, stride, features, count in self.stages:
      for position in range(count):
        kwargs = dict(strides=stride if position == 0 else 1,
                      drop_rate=self.drop_rate * index / total, conv=conv, norm=norm)
        x = (L.FusedMBConv(features, expand, **kwargs) if fused else
             L.MBConv(features, expand, **kwargs))(x, train)
        index += 1
    x = unit(1280, 1, name='head_conv')(x, train)
    x = nn.Dropout(self.dropout, deterministic=not train)(L.global_avg_pool(x))
    return nn.Dense(self.num_classes, dtype=self.dtype, name='head')(x)
