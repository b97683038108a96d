"""AlexNet (Krizhevsky et al., 2012) and ZFNet (Zeiler & Fergus, 2014): 5 convs + 3 dense layers.

AlexNet is the single-tower layout (no split over two GPUs) on 227x227 inputs: 62,378,344
parameters with 1000 classes, 6% of them in the convolutions. ZFNet changes the first two layers
(7x7/2 instead of 11x11/4, then a 5x5/2) on 224x224 inputs, giving the paper's maps
110 -> 55 -> 26 -> 13 -> 6.
"""

from typing import Any

import flax.linen as nn
import jax

from cnn_jax import layers as L

# (kernel, stride, padding) of conv1 and conv2, and the padding of the first two max-pools.
GEOMETRY = {
    'alexnet': dict(conv1=(11, 4, 'VALID'), conv2=(5, 1, 2), pool_padding='VALID'),
    'zfnet': dict(conv1=(7, 2, 1), conv2=(5, 2, 'VALID'), pool_padding='SAME'),
}


class AlexNet(nn.Module):
  """conv1 -> pool -> conv2 -> pool -> conv3-5 -> pool -> [dropout -> dense] x2 -> dense.

  Attributes:
    num_classes: outputs.
    variant: 'alexnet' or 'zfnet'.
    widths: channels of conv1..conv5 (96, 256, 384, 384, 256 in both papers).
    dense_features: width of the two hidden dense layers.
    dropout: dropout rate before each hidden dense layer.
  """
  num_classes: int = 1000
  variant: str = 'alexnet'
  widths: tuple[int, ...] = (96, 256, 384, 384, 256)
  dense_features: int = 4096
  dropout: float = 0.5
  dtype: Any = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    if self.variant not in GEOMETRY:
      raise ValueError(f'AlexNet(variant={self.variant!r}): expected one of {tuple(GEOMETRY)}.')
    geometry = GEOMETRY[self.variant]
    convs = [geometry['conv1'], geometry['conv2']] + [(3, 1, 1)] * 3
    for index, (width, (kernel, stride, padding)) in enumerate(zip(self.widths, convs)):
      x = nn.relu(L.Conv(width, kernel, strides=stride, padding=padding, dtype=self.dtype,
                         name=f'conv{index + 1}')(x))
      if index in (0, 1):
        x = L.max_pool(x, 3, strides=2, padding=geometry['pool_padding'])
    x = L.max_pool(x, 3, strides=2)
    x = x.reshape(x.shape[0], -1)
    for index in range(2):
      x = nn.Dropout(self.dropout, deterministic=not train)(x)
      x = nn.relu(nn.Dense(self.dense_features, dtype=self.dtype, name=f'fc{index + 6}')(x))
    return nn.Dense(self.num_classes, dtype=self.dtype, name='fc8')(x)
