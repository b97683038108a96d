"""VGG (Simonyan & Zisserman, 2015): stacks of 3x3 convolutions, 2x2 max-pools, three dense layers.

Configurations A (11 layers), B (13), D (16) and E (19), with or without BatchNorm. With 1000
classes VGG-16 has 138,357,544 parameters, 89% of them in the dense layers. The BatchNorm
variants keep the conv biases, as the reference (torchvision) models whose counts we match do.
"""

import functools
from typing import Any

import flax.linen as nn
import jax

from cnn_jax import layers as L
from cnn_jax.models.factories import conv_and_norm
from cnn_jax.models.registry import Torchvision, Weights, image, register_model

# Convolutions per stage; stage s has width * 2**min(s, 3) channels.
DEPTHS = {11: (1, 1, 2, 2, 2), 13: (2, 2, 2, 2, 2), 16: (2, 2, 3, 3, 3), 19: (2, 2, 4, 4, 4)}


class VGGFeatures(nn.Module):
  """The convolutional part: returns the max-pooled output of every stage (strides 2..32).

  Shared by `VGG` and the FCNs, which read the pooled maps of the last three stages.
  """
  depth: int = 16
  width: int = 64
  batch_norm: bool = False
  axis_name: str | None = None
  dtype: Any = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> list[jax.Array]:
    if self.depth not in DEPTHS:
      raise ValueError(f'VGG depth {self.depth}: expected one of {tuple(DEPTHS)}.')
    conv, norm = conv_and_norm(self.dtype, self.axis_name)
    pooled = []
    for stage, count in enumerate(DEPTHS[self.depth]):
      for _ in range(count):
        x = conv(self.width * 2 ** min(stage, 3), 3)(x)
        if self.batch_norm:
          x = norm(use_running_average=not train)(x)
        x = nn.relu(x)
      x = L.max_pool(x, 2, strides=2)
      pooled.append(x)
    return pooled


class VGG(nn.Module):
  """`VGGFeatures` -> flatten -> [dense 4096 -> ReLU -> dropout] x2 -> dense (224x224 inputs)."""
  depth: int = 16
  num_classes: int = 1000
  width: int = 64
  batch_norm: bool = False
  dense_features: int = 4096
  dropout: float = 0.5
  axis_name: str | None = None
  dtype: Any = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    x = VGGFeatures(self.depth, self.width, self.batch_norm, self.axis_name, self.dtype,
                    name='features')(x, train)[-1]
    x = x.reshape(x.shape[0], -1)
    for index in range(2):
      x = nn.relu(nn.Dense(self.dense_features, dtype=self.dtype, name=f'fc{index + 1}')(x))
      x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return nn.Dense(self.num_classes, dtype=self.dtype, name='head')(x)


# torchvision's files, without and with BatchNorm.
WEIGHTS = {11: (Weights('vgg11-8a719046.pth', 69.02), Weights('vgg11_bn-6002323d.pth', 70.37)),
           13: (Weights('vgg13-19584684.pth', 69.928), Weights('vgg13_bn-abd245e5.pth', 71.586)),
           16: (Weights('vgg16-397923af.pth', 71.592), Weights('vgg16_bn-6c64b313.pth', 73.36)),
           19: (Weights('vgg19-dcbb9e9d.pth', 72.376), Weights('vgg19_bn-c79401a0.pth', 74.218))}

for _depth, (_plain, _bn) in WEIGHTS.items():
  register_model(f'vgg{_depth}', functools.partial(VGG, depth=_depth), image(224), 'vgg',
                 Torchvision((_plain,), flattened=('classifier.0',)))
  register_model(f'vgg{_depth}_bn', functools.partial(VGG, depth=_depth, batch_norm=True),
                 image(224), 'vgg', Torchvision((_bn,), flattened=('classifier.0',)))
