"""LeNet-5 (LeCun et al., 1998): 32x32 grayscale, 5x5 convs, 2x2 pooling, 6-16-120-84 layout."""

from typing import Any

import flax.linen as nn
import jax

from cnn_jax import layers as L
from cnn_jax.models.registry import image, register_model


@register_model('lenet5', input_shape=image(32, 1), family='lenet', classes=10)
class LeNet5(nn.Module):
  """C1 6@28x28 -> S2 -> C3 16@10x10 -> S4 -> C5 120 -> F6 84 -> output.

  Attributes:
    num_classes: outputs.
    activation: 'tanh' (the original squashing) , 'sigmoid' or 'relu'.
    pooling: 'avg' (the original subsampling) or 'max'.
    input_padding: zeros around the input; 2 turns MNIST's 28x28 into the 32x32 LeNet expects.
  """
  num_classes: int = 10
  activation: str = 'tanh'
  pooling: str = 'avg'
  input_padding: int = 0
  dtype: Any = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    act = {'tanh': nn.tanh, 'sigmoid': nn.sigmoid, 'relu': nn.relu}[self.activation]
    pool = {'avg': L.avg_pool, 'max': L.max_pool}[self.pooling]
    x = L.Conv(6, 5, padding=self.input_padding, dtype=self.dtype, name='C1')(x)
    x = pool(act(x), 2, strides=2)
    x = L.Conv(16, 5, padding='VALID', dtype=self.dtype, name='C3')(x)
    x = pool(act(x), 2, strides=2)
    x = L.Conv(120, 5, padding='VALID', dtype=self.dtype, name='C5')(x)
    x = act(x.reshape(x.shape[0], -1))
    x = act(nn.Dense(84, dtype=self.dtype, name='F6')(x))
    return nn.Dense(self.num_classes, dtype=self.dtype, name='output')(x)
