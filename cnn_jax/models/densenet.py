"""DenseNet-BC (Huang et al., 2017): dense blocks of bottleneck layers joined by compressing
transitions. DenseNet-121/169/201 have 7,978,856 / 14,149,480 / 20,013,928 parameters with 1000
classes."""

import functools
from typing import Any

import flax.linen as nn
import jax

from cnn_jax import layers as L
from cnn_jax.models.factories import conv_and_norm
from cnn_jax.models.registry import Torchvision, Weights, image, register_model


class DenseNet(nn.Module):
  """7x7/2 conv -> 3x3/2 max-pool -> [dense block -> transition] ... -> norm -> ReLU -> pool -> linear.

  Attributes:
    block_sizes: layers per dense block.
    growth_rate: channels each layer adds (k).
    init_features: stem channels (2k in the paper).
    bottleneck_width: 1x1 width in units of k (4, DenseNet-B).
    compression: transition channel factor (0.5, DenseNet-C).
    padding: of every convolution and the stem's max-pool: 'SAME', or 'HALF' (torchvision's).
  """
  block_sizes: tuple[int, ...]
  num_classes: int = 1000
  growth_rate: int = 32
  init_features: int = 64
  bottleneck_width: int = 4
  compression: float = 0.5
  padding: str = 'SAME'
  axis_name: str | None = None
  dtype: Any = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    conv, norm = conv_and_norm(self.dtype, self.axis_name, self.padding)
    x = L.ConvNormAct(self.init_features, 7, strides=2, conv=conv, norm=norm, name='stem')(x, train)
    x = L.max_pool(x, 3, strides=2, padding=self.padding)
    for index, size in enumerate(self.block_sizes):
      x = L.DenseBlock(size, self.growth_rate, self.bottleneck_width, conv=conv, norm=norm)(x, train)
      if index < len(self.block_sizes) - 1:
        x = L.Transition(self.compression, conv=conv, norm=norm)(x, train)
    x = nn.relu(norm(use_running_average=not train, name='final_norm')(x))
    return nn.Dense(self.num_classes, dtype=self.dtype, name='head')(L.global_avg_pool(x))


DEPTHS = {121: (6, 12, 24, 16), 169: (6, 12, 32, 32), 201: (6, 12, 48, 32)}


def densenet(depth: int) -> functools.partial:
  return functools.partial(DenseNet, block_sizes=DEPTHS[depth])


WEIGHTS = {121: Weights('densenet121-a639ec97.pth', 74.434),
           169: Weights('densenet169-b2777c0a.pth', 75.6),
           201: Weights('densenet201-c1103571.pth', 76.896)}

ORDER = ('features', 'classifier', 'conv0', 'norm0', 'denseblock1', 'transition1', 'denseblock2',
         'transition2', 'denseblock3', 'transition3', 'denseblock4', 'norm5', 'norm1', 'conv1',
         'norm2', 'conv2', 'norm', 'conv')

for _depth, _weights in WEIGHTS.items():
  register_model(f'densenet{_depth}', densenet(_depth), image(224), 'densenet', Torchvision(
      (_weights,), overrides={'padding': 'HALF'}, order=ORDER,
      note="padding='HALF': torchvision pads the stem's strided convolution and max-pool "
      'symmetrically'))
