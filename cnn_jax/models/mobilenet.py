"""MobileNets v1, v2 and v3-Large.

MobileNet v1 (Howard et al., 2017): a 3x3 conv, then 13 depthwise-separable blocks.

Each block is a 3x3 depthwise conv and a 1x1 pointwise conv, each followed by BatchNorm + ReLU.
The width multiplier ``alpha`` thins every layer; the resolution multiplier is the input size
(``rho * 224``: the model is fully convolutional up to the global pool). With 1000 classes at
224x224, 4,231,976 parameters and 569 M multiply-adds.
"""

import functools
from typing import Any

import flax.linen as nn
import jax

from cnn_jax import layers as L
from cnn_jax.models.factories import conv_and_norm, round_channels, scale_width
from cnn_jax.models.registry import Preprocessing, Torchvision, Weights, image, register_model

# (pointwise channels, depthwise stride) of the 13 separable blocks (Table 1).
BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), *((512, 1),) * 5,
          (1024, 2), (1024, 1))


@register_model('mobilenet_v1', input_shape=image(224), family='mobilenet')
class MobileNetV1(nn.Module):
  """Attributes:
    num_classes: outputs.
    width_multiplier: alpha, scaling every layer's channels (1.0, 0.75, 0.5, 0.25 in the paper).
    dropout: before the classifier.
  """
  num_classes: int = 1000
  width_multiplier: float = 1.0
  dropout: float = 1e-3
  axis_name: str | None = None
  dtype: Any = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    conv, norm = conv_and_norm(self.dtype, self.axis_name)
    width = functools.partial(scale_width, multiplier=self.width_multiplier)
    x = L.ConvNormAct(width(32), 3, strides=2, conv=conv, norm=norm, name='stem')(x, train)
    for index, (features, stride) in enumerate(BLOCKS):
      channels = x.shape[-1]
      x = L.ConvNormAct(channels, 3, strides=stride, feature_group_count=channels, conv=conv,
                        norm=norm, name=f'depthwise{index + 1}')(x, train)
      x = L.ConvNormAct(width(features), 1, conv=conv, norm=norm,
                        name=f'pointwise{index + 1}')(x, train)
    x = nn.Dropout(self.dropout, deterministic=not train)(L.global_avg_pool(x))
    return nn.Dense(self.num_classes, dtype=self.dtype, name='head')(x)


class InvertedResidual(nn.Module):
  """MobileNet v2/v3's block: 1x1 expansion to ``hidden`` (unless ``hidden`` is the input width)
  -> k x k depthwise -> squeeze-excitation (v3, ``se_features`` > 0) -> linear 1x1 projection,
  with an identity shortcut where stride 1 keeps the width."""
  hidden: int
  features: int
  kernel_size: int = 3
  strides: int = 1
  se_features: int = 0
  act: Any = nn.relu6
  conv: Any = L.Conv
  norm: Any = L.BatchNorm

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    unit = functools.partial(L.ConvNormAct, conv=self.conv, norm=self.norm, act=self.act)
    y = unit(self.hidden, 1, name='expand')(x, train) if self.hidden != x.shape[-1] else x
    y = unit(self.hidden, self.kernel_size, strides=self.strides, feature_group_count=self.hidden,
             name='depthwise')(y, train)
    if self.se_features:
      y = L.SqueezeExcite(self.se_features, gate=nn.hard_sigmoid)(y)
    y = unit(self.features, 1, act=None, name='project')(y, train)
    return x + y if self.strides == 1 and x.shape[-1] == self.features else y


# MobileNet v2 (Sandler et al., 2018), Table 2: expansion t, channels c, repeats n, stride s.
V2_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
             (6, 160, 3, 2), (6, 320, 1, 1))


@register_model('mobilenet_v2', input_shape=image(224), family='mobilenet', torchvision=Torchvision(
    (Weights('mobilenet_v2-b0353104.pth', 71.878),
     Weights('mobilenet_v2-7ebf99e0.pth', 72.154, Preprocessing(resize=232)))))
class MobileNetV2(nn.Module):
  """3x3/2 conv -> 17 inverted residuals (ReLU6, linear bottlenecks) -> 1x1 conv to 1280 -> pool
  -> dropout -> linear; 3,504,872 parameters with 1000 classes. Padding as torchvision's."""
  num_classes: int = 1000
  dropout: float = 0.2
  axis_name: str | None = None
  dtype: Any = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    conv, norm = conv_and_norm(self.dtype, self.axis_name, 'HALF')
    unit = functools.partial(L.ConvNormAct, conv=conv, norm=norm, act=nn.relu6)
    x = unit(32, 3, strides=2, name='stem')(x, train)
    for expansion, features, repeats, stride in V2_STAGES:
      for index in range(repeats):
        x = InvertedResidual(x.shape[-1] * expansion, features, 3, stride if index == 0 else 1,
                             conv=conv, norm=norm)(x, train)
    x = unit(1280, 1, name='head_conv')(x, train)
    x = nn.Dropout(self.dropout, deterministic=not train)(L.global_avg_pool(x))
    return nn.Dense(self.num_classes, dtype=self.dtype, name='head')(x)


# MobileNet v3-Large (Howard et al., 2019), Table 1: kernel, expanded width, output width,
# squeeze-excitation, hard-swish (else ReLU), stride.
V3_LARGE = ((3, 16, 16, False, False, 1), (3, 64, 24, False, False, 2),
            (3, 72, 24, False, False, 1), (5, 72, 40, True, False, 2), (5, 120, 40, True, False, 1),
            (5, 120, 40, True, False, 1), (3, 240, 80, False, True, 2),
            (3, 200, 80, False, True, 1), (3, 184, 80, False, True, 1),
            (3, 184, 80, False, True, 1), (3, 480, 112, True, True, 1),
            (3, 672, 112, True, True, 1), (5, 672, 160, True, True, 2),
            (5, 960, 160, True, True, 1), (5, 960, 160, True, True, 1))


@register_model('mobilenet_v3_large', input_shape=image(224), family='mobilenet',
                torchvision=Torchvision(
                    (Weights('mobilenet_v3_large-8738ca79.pth', 74.042),
                     Weights('mobilenet_v3_large-5c1a4163.pth', 75.274,
                             Preprocessing(resize=232)))))
class MobileNetV3Large(nn.Module):
  """3x3/2 conv (hard-swish) -> 15 inverted residuals, some with hard-sigmoid squeeze-excitation
  -> 1x1 conv to 960 -> pool -> dense 1280 (hard-swish) -> dropout -> linear; 5,483,032
  parameters with 1000 classes. BatchNorm epsilon 1e-3 and padding as torchvision's."""
  num_classes: int = 1000
  dropout: float = 0.2
  axis_name: str | None = None
  dtype: Any = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    conv, norm = conv_and_norm(self.dtype, self.axis_name, 'HALF', epsilon=1e-3)
    unit = functools.partial(L.ConvNormAct, conv=conv, norm=norm, act=nn.hard_swish)
    x = unit(16, 3, strides=2, name='stem')(x, train)
    for kernel, hidden, features, se, hard_swish, stride in V3_LARGE:
      x = InvertedResidual(hidden, features, kernel, stride, round_channels(hidden // 4) if se else 0,
                           nn.hard_swish if hard_swish else nn.relu, conv, norm)(x, train)
    x = unit(6 * x.shape[-1], 1, name='head_conv')(x, train)
    x = nn.hard_swish(nn.Dense(1280, dtype=self.dtype, name='pre_logits')(L.global_avg_pool(x)))
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return nn.Dense(self.num_classes, dtype=self.dtype, name='head')(x)
