"""GoogLeNet / Inception v1 (Szegedy et al., 2015): nine inception modules with 1x1 reductions.

The paper's network on 224x224 inputs (no BatchNorm, no local response norm), with the two
optional auxiliary classifiers after inception 4a and 4d. With ``aux_heads`` the model returns
``(logits, aux_4a, aux_4d)`` in training (the loop adds ``config.aux_loss_weight`` times their
losses, 0.3 in the paper) and plain logits in evaluation, where the heads are discarded.

``variant='torchvision'`` is the layout of torchvision's pretrained GoogLeNet: BatchNorm (epsilon
1e-3) after every convolution, a 3x3 convolution in the '5x5' branch, a 2x2 max-pool before
inception 5a and symmetric padding of the strided stem.
"""

import functools
from typing import Any

import flax.linen as nn
import jax

from cnn_jax import layers as L
from cnn_jax.models.factories import conv_and_norm, scale_width
from cnn_jax.models.registry import Preprocessing, Torchvision, Weights, image, register_model

# Table 1: #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj; None = 3x3/2 max-pool.
MODULES = (
    ('3a', (64, 96, 128, 16, 32, 32)), ('3b', (128, 128, 192, 32, 96, 64)), None,
    ('4a', (192, 96, 208, 16, 48, 64)), ('4b', (160, 112, 224, 24, 64, 64)),
    ('4c', (128, 128, 256, 24, 64, 64)), ('4d', (112, 144, 288, 32, 64, 64)),
    ('4e', (256, 160, 320, 32, 128, 128)), None,
    ('5a', (256, 160, 320, 32, 128, 128)), ('5b', (384, 192, 384, 48, 128, 128)),
)


class AuxHead(nn.Module):
  """5x5/3 average pool -> 1x1 conv 128 -> dense 1024 -> dropout 0.7 -> dense."""
  num_classes: int
  features: int = 128
  dense_features: int = 1024
  conv: Any = L.Conv
  dtype: Any = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    x = L.avg_pool(x, 5, strides=3)
    x = nn.relu(self.conv(self.features, 1)(x))
    x = nn.relu(nn.Dense(self.dense_features, dtype=self.dtype)(x.reshape(x.shape[0], -1)))
    x = nn.Dropout(0.7, deterministic=not train)(x)
    return nn.Dense(self.num_classes, dtype=self.dtype)(x)
VARIANTS = ('paper', 'torchvision')


@register_model('googlenet', input_shape=image(224), torchvision=Torchvision(
    # Its weights were trained on inputs scaled to [-1, 1] (torchvision's transform_input).
    (Weights('googlenet-1378be20.pth', 69.778, Preprocessing(mean=(0.5,) * 3, std=(0.5,) * 3)),),
    overrides={'variant': 'torchvision'}, skip=('aux1.', 'aux2.'),
    order=('conv1', 'conv2', 'conv3', 'inception', 'fc', 'conv', 'bn'),
    note="variant='torchvision': torchvision's layout differs from the paper's; its auxiliary "
    'heads are not loaded'))
class GoogLeNet(nn.Module):
  """Attributes:
    num_classes: outputs.
    variant: 'paper' or 'torchvision' (see the module docstring).
    aux_heads: build the two auxiliary classifiers (returned in training only).
    batch_norm: BatchNorm after every convolution (as in later Inception versions).
    width_multiplier: scales every layer's channels (for small experiments and tests).
    dropout: before the final dense layer (0.4 in the paper).
  """
  num_classes: int = 1000
  variant: str = 'paper'
  aux_heads: bool = False
  batch_norm: bool = False
  width_multiplier: float = 1.0
  dropout: float = 0.4
  axis_name: str | None = None
  dtype: Any = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False):
    if self.variant not in VARIANTS:
      raise ValueError(f'GoogLeNet(variant={self.variant!r}): expected one of {VARIANTS}.')
    torchvision = self.variant == 'torchvision'
    conv, norm = conv_and_norm(self.dtype, self.axis_name, *(('HALF', 1e-3) if torchvision else ()))
    norm = norm if self.batch_norm or torchvision else None
    width = functools.partial(scale_width, multiplier=self.width_multiplier)
    unit = functools.partial(L.ConvNormAct, conv=conv, norm=norm)
    x = unit(width(64), 7, strides=2, name='conv1')(x, train)
    x = L.max_pool(x, 3, strides=2, padding='SAME')
    x = unit(width(64), 1, name='conv2_reduce')(x, train)
    x = unit(width(192), 3, name='conv2')(x, train)
    x = L.max_pool(x, 3, strides=2, padding='SAME')
    aux = []
    for module in MODULES:
      if module is None:
        window = 2 if torchvision and name == '4e' else 3  # after 4e
        x = L.max_pool(x, window, strides=2, padding='SAME')
        continue
      name, features = module
      x = L.InceptionModule(*map(width, features), kernel_5x5=3 if torchvision else 5, conv=conv,
                            norm=norm, name=f'inception_{name}')(x, train)
      if self.aux_heads and name in ('4a', '4d'):
        aux.append(AuxHead(self.num_classes, width(128), width(1024), conv, self.dtype,
                           name=f'aux_{name}')(x, train))
    x = nn.Dropout(self.dropout, deterministic=not train)(L.global_avg_pool(x))
    logits = nn.Dense(self.num_classes, dtype=self.dtype, name='head')(x)
    return (logits, *aux) if self.aux_heads and train else logits
