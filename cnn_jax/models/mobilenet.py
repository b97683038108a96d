"""MobileNet v1 (Howard et al., 2017): a 3x3 conv, then 13 depthwise-separable blocks.

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
from cnn_jax.models.factories import conv_and_norm, scale_width

# (pointwise channels, depthwise stride) of the 13 separable blocks (Table 1).
BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), *((512, 1),) * 5,
          (1024, 2), (1024, 1))


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
