"""The dilated-convolution context network (Yu & Koltun, 2016): no pooling, no downsampling.

3x3 convolutions with dilations 1, 1, 2, 4, 8, 16, 1 grow the receptive field exponentially
(to 67x67 for the context module alone) while every layer keeps the full input resolution and
the parameter count of a plain 3x3 layer.
"""

import functools
from typing import Any

import flax.linen as nn
import jax

from cnn_jax import layers as L
from cnn_jax.models.factories import conv_and_norm
from cnn_jax.models.registry import image, register_model


@register_model('dilated_context', input_shape=image(64), classes=21)
class DilatedContextNet(nn.Module):
  """Front end (plain 3x3 conv-BN-ReLU) -> context module (dilated 3x3) -> 1x1 classifier.

  Attributes:
    num_classes: classes per pixel.
    width: channels of every layer.
    front_layers: undilated layers before the context module.
    dilations: of the context module's 3x3 layers.
  """
  num_classes: int = 21
  width: int = 64
  front_layers: int = 2
  dilations: tuple[int, ...] = (1, 1, 2, 4, 8, 16, 1)
  axis_name: str | None = None
  dtype: Any = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    conv, norm = conv_and_norm(self.dtype, self.axis_name)
    for index in range(self.front_layers):
      x = L.ConvNormAct(self.width, 3, conv=conv, norm=norm, name=f'front{index + 1}')(x, train)
    for index, dilation in enumerate(self.dilations):
      dilated = functools.partial(conv, kernel_dilation=dilation)
      x = L.ConvNormAct(self.width, 3, conv=dilated, norm=norm, name=f'context{index + 1}')(x, train)
    return conv(self.num_classes, 1, name='classifier')(x)
