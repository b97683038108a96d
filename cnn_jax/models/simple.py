"""Small CNNs for small inputs: the default experiment's model and a 1-D sequence CNN."""

from typing import Any

import flax.linen as nn
import jax

from cnn_jax import layers as L
from cnn_jax.models.factories import conv_and_norm
from cnn_jax.models.registry import image, register_model


@register_model('simple_cnn', input_shape=image(8, 1), family='simple', classes=10)
class SimpleCNN(nn.Module):
  """[conv-BN-ReLU x2 -> max-pool] per stage, then global average pooling and a linear head.

  Works for any spatial rank (1-D sequences, 2-D images).
  """
  num_classes: int
  widths: tuple[int, ...] = (32, 64)
  kernel_size: int = 3
  dropout: float = 0.0
  axis_name: str | None = None
  dtype: Any = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    conv, norm = conv_and_norm(self.dtype, self.axis_name)
    for stage, width in enumerate(self.widths):
      for _ in range(2):
        x = L.ConvNormAct(width, self.kernel_size, conv=conv, norm=norm)(x, train)
      if stage < len(self.widths) - 1:
        x = L.max_pool(x, 2, strides=2, padding='SAME')
    x = L.global_avg_pool(x)
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return nn.Dense(self.num_classes, dtype=self.dtype)(x)
