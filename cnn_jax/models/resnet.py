"""ResNets (He et al., 2016) and their relatives, from one module.

Basic, bottleneck and pre-activation blocks; ImageNet and CIFAR stems; shortcut variants (the
plain twin without shortcuts, the gated highway join); parameter-free 'pad' projections (the CIFAR
ResNet-20...110 of the paper); stochastic depth with linearly growing drop rates (Huang et al.,
2016). Works for any spatial rank: on [N, L, C] sequences it is a 1-D ResNet.
"""

import functools
from typing import Any

import flax.linen as nn
import jax

from cnn_jax import layers as L
from cnn_jax.models.factories import conv_and_norm

BLOCKS = {'basic': L.ResidualBlock, 'bottleneck': L.BottleneckBlock,
          'preact': L.PreActResidualBlock}
STEMS = ('imagenet', 'cifar')


class ResNet(nn.Module):
  """Stem -> stages of residual blocks (stride 2 at each new stage) -> global pool -> linear.

  Attributes:
    stage_sizes: blocks per stage.
    block: 'basic' (two 3x3), 'bottleneck' (1x1-3x3-1x1, 4x expansion) or 'preact' (basic with
      norm -> act before each conv, He et al., 2016b).
    num_classes: outputs.
    width: channels of the first stage (doubling per stage).
    stem: 'imagenet' (7x7/2 conv + 3x3/2 max-pool) or 'cifar' (one 3x3 conv, no pooling).
    stem_kernel: the stem convolution's kernel size (7 and 3 by default for the two stems).
    stride_in_3x3: bottleneck stride on the 3x3 (v1.5, torchvision) or on the first 1x1 (v1,
      the paper).
    shortcut: 'identity', 'none' (the plain twin) or 'gated' (highway); post-activation blocks only.
    projection: 'conv' (1x1, option B) or 'pad' (zero channels, option A) where shapes change.
    drop_rate: stochastic depth: block ``l`` of ``L`` drops its branch with ``drop_rate * l / L``.
    axis_name: BatchNorm's cross-device axis in per-device (pmap-style) training.
  """
  stage_sizes: tuple[int, ...]
  block: str = 'basic'
  num_classes: int = 1000
  width: int = 64
  stem: str = 'imagenet'
  stem_kernel: int | None = None
  stride_in_3x3: bool = True
  shortcut: str = 'identity'
  projection: str = 'conv'
  drop_rate: float = 0.0
  axis_name: str | None = None
  dtype: Any = None

  def _check(self) -> None:
    if self.block not in BLOCKS or self.stem not in STEMS:
      raise ValueError(f'ResNet(block={self.block!r}, stem={self.stem!r}): expected block in '
                       f'{tuple(BLOCKS)} and stem in {STEMS}.')
    if self.block == 'preact' and (self.shortcut != 'identity' or self.projection != 'conv'):
      raise ValueError("ResNet(block='preact') has identity shortcuts with 'conv' projections "
                       f"only; got shortcut={self.shortcut!r}, projection={self.projection!r}.")

  def _block(self, conv, norm) -> Any:
    kwargs = dict(conv=conv, norm=norm)
    if self.block != 'preact':
      kwargs.update(shortcut=self.shortcut, projection=self.projection)
    if self.block == 'bottleneck':
      kwargs.update(stride_in_3x3=self.stride_in_3x3)
    return functools.partial(BLOCKS[self.block], **kwargs)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    self._check()
    conv, norm = conv_and_norm(self.dtype, self.axis_name)
    preact = self.block == 'preact'
    if self.stem == 'imagenet':
      x = L.ConvNormAct(self.width, self.stem_kernel or 7, strides=2, conv=conv, norm=norm,
                        name='stem')(x, train)
      x = L.max_pool(x, 3, strides=2, padding='SAME')
    elif preact:  # the first block's norm -> act follows directly
      x = conv(self.width, self.stem_kernel or 3, use_bias=False, name='stem')(x)
    else:
      x = L.ConvNormAct(self.width, self.stem_kernel or 3, conv=conv, norm=norm, name='stem')(
          x, train)
    block = self._block(conv, norm)
    total, index = sum(self.stage_sizes), 0
    for stage, size in enumerate(self.stage_sizes):
      for position in range(size):
        index += 1
        strides = 2 if stage > 0 and position == 0 else 1
        x = block(self.width * 2 ** stage, strides=strides,
                  drop_rate=self.drop_rate * index / total)(x, train)
    if preact:
      x = nn.relu(norm(use_running_average=not train, name='final_norm')(x))
    x = L.global_avg_pool(x)
    return nn.Dense(self.num_classes, dtype=self.dtype, name='head')(x)


IMAGENET_DEPTHS = {18: ((2, 2, 2, 2), 'basic'), 34: ((3, 4, 6, 3), 'basic'),
                   50: ((3, 4, 6, 3), 'bottleneck'), 101: ((3, 4, 23, 3), 'bottleneck'),
                   152: ((3, 8, 36, 3), 'bottleneck')}
CIFAR_DEPTHS = (20, 32, 44, 56, 110)  # 6n + 2 layers: three stages of n basic blocks


def imagenet_resnet(depth: int, **kwargs) -> functools.partial:
  stages, block = IMAGENET_DEPTHS[depth]
  return functools.partial(ResNet, stage_sizes=stages, **{'block': block, **kwargs})


def cifar_resnet(depth: int, **kwargs) -> functools.partial:
  """The paper's CIFAR-10 ResNets: widths 16-32-64, parameter-free shortcuts (option A)."""
  n = (depth - 2) // 6
  return functools.partial(ResNet, stage_sizes=(n, n, n), width=16, stem='cifar',
                           **{'projection': 'pad', **kwargs})
