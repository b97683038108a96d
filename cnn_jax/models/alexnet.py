"""AlexNet (Krizhevsky et al., 2012) and ZFNet (Zeiler & Fergus, 2014): 5 convs + 3 dense layers.

AlexNet is the single-tower layout (no split over two GPUs) on 227x227 inputs: 62,378,344
parameters with 1000 classes, 6% of them in the convolutions. The 'torchvision' variant is the
"one weird trick" layout of torchvision's pretrained AlexNet (Krizhevsky, 2014): widths 64, 192,
384, 256, 256 and a conv1 padded by 2, on 224x224 inputs (61,100,840 parameters). ZFNet changes the first two layers
(7x7/2 instead of 11x11/4, then a 5x5/2) on 224x224 inputs, giving the paper's maps
110 -> 55 -> 26 -> 13 -> 6.
"""

import functools
from typing import Any

import flax.linen as nn
import jax

from cnn_jax import layers as L
from cnn_jax.models.registry import Torchvision, Weights, image, register_model

# (kernel, stride, padding) of conv1 and conv2, and the padding of the first two max-pools.
GEOMETRY = {
    'alexnet': dict(conv1=(11, 4, 'VALID'), conv2=(5, 1, 2), pool_padding='VALID'),
    'zfnet': dict(conv1=(7, 2, 1), conv2=(5, 2, 'VALID'), pool_padding='SAME'),
    'torchvision': dict(conv1=(11, 4, 2), conv2=(5, 1, 2), pool_padding='VALID'),
}

WIDTHS = {'alexnet': (96, 256, 384, 384, 256), 'zfnet': (96, 256, 384, 384, 256),
          'torchvision': (64, 192, 384, 256, 256)}


@register_model('alexnet', input_shape=image(227), torchvision=Torchvision(
    (Weights('alexnet-owt-7be5be79.pth', 56.522),), overrides={'variant': 'torchvision'},
    flattened=('classifier.1',),
    note="variant='torchvision': torchvision's AlexNet is the one-GPU layout of 2014"))
class AlexNet(nn.Module):
  """conv1 -> pool -> conv2 -> pool -> conv3-5 -> pool -> [dropout -> dense] x2 -> dense.

  Attributes:
    num_classes: outputs.
    variant: 'alexnet', 'zfnet' or 'torchvision'.
    widths: channels of conv1..conv5 (96, 256, 384, 384, 256 in both papers; None: the
      variant's).
    dense_features: width of the two hidden dense layers.
    dropout: dropout rate before each hidden dense layer.
  """
  num_classes: int = 1000
  variant: str = 'alexnet'
  widths: tuple[int, ...] | None = None
  dense_features: int = 4096
  dropout: float = 0.5
  dtype: Any = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    if self.variant not in GEOMETRY:
      raise ValueError(f'AlexNet(variant={self.variant!r}): expected one of {tuple(GEOMETRY)}.')
    geometry = GEOMETRY[self.variant]
    convs = [geometry['conv1'], geometry['conv2']] + [(3, 1, 1)] * 3
    widths = self.widths or WIDTHS[self.variant]
    for index, (width, (kernel, stride, padding)) in enumerate(zip(widths, convs)):
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


register_model('zfnet', functools.partial(AlexNet, variant='zfnet'), image(224), 'alexnet')
