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
from cnn_jax.models.registry import Preprocessing, Torchvision, Weights, image, register_model

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
    groups: grouped 3x3 convolutions in bottlenecks (ResNeXt's cardinality).
    width_per_group: bottleneck width per group for 64 stage channels: the 3x3 convolutions of a
      stage with ``c`` channels have ``c * width_per_group / 64 * groups`` (ResNeXt 32x4d: 4;
      Wide ResNet-50-2: 128).
    padding: of every convolution and the stem's max-pool: 'SAME', or 'HALF' (torchvision's).
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
  groups: int = 1
  width_per_group: int = 64
  padding: str = 'SAME'
  axis_name: str | None = None
  dtype: Any = None

  def _check(self) -> None:
    if self.block not in BLOCKS or self.stem not in STEMS:
      raise ValueError(f'ResNet(block={self.block!r}, stem={self.stem!r}): expected block in '
                       f'{tuple(BLOCKS)} and stem in {STEMS}.')
    if self.block == 'preact' and (self.shortcut != 'identity' or self.projection != 'conv'):
      raise ValueError("ResNet(block='preact') has identity shortcuts with 'conv' projections "
                       f"only; got shortcut={self.shortcut!r}, projection={self.projection!r}.")

  def _block(self, conv, norm, channels: int) -> Any:
    """The block of a stage with ``channels`` (a bottleneck's output is 4x that)."""
    kwargs = dict(features=channels, conv=conv, norm=norm)
    if self.block != 'preact':
      kwargs.update(shortcut=self.shortcut, projection=self.projection)
    if self.block == 'bottleneck':
      inner = channels * self.width_per_group // 64 * self.groups
      if (4 * channels) % inner:
        raise ValueError(f'ResNet(groups={self.groups}, width_per_group={self.width_per_group}): '
                         f'the bottleneck width {inner} must divide the output {4 * channels}.')
      kwargs.update(features=inner, expansion=4 * channels // inner, groups=self.groups,
                    stride_in_3x3=self.stride_in_3x3)
    return functools.partial(BLOCKS[self.block], **kwargs)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    self._check()
    conv, norm = conv_and_norm(self.dtype, self.axis_name, self.padding)
    preact = self.block == 'preact'
    if self.stem == 'imagenet':
      x = L.ConvNormAct(self.width, self.stem_kernel or 7, strides=2, conv=conv, norm=norm,
                        name='stem')(x, train)
      x = L.max_pool(x, 3, strides=2, padding=self.padding)
    elif preact:  # the first block's norm -> act follows directly
      x = conv(self.width, self.stem_kernel or 3, use_bias=False, name='stem')(x)
    else:
      x = L.ConvNormAct(self.width, self.stem_kernel or 3, conv=conv, norm=norm, name='stem')(
          x, train)
    total, index = sum(self.stage_sizes), 0
    for stage, size in enumerate(self.stage_sizes):
      block = self._block(conv, norm, self.width * 2 ** stage)
      for position in range(size):
        index += 1
        strides = 2 if stage > 0 and position == 0 else 1
        x = block(strides=strides, drop_rate=self.drop_rate * index / total)(x, train)
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


def _torchvision(*weights: Weights) -> Torchvision:
  return Torchvision(weights, overrides={'padding': 'HALF'}, order=ORDER,
                     note="padding='HALF': torchvision pads strided convolutions and the stem's "
                     "max-pool symmetrically")


ORDER = ('conv1', 'bn1', 'conv2', 'bn2', 'conv3', 'bn3', 'downsample', 'layer', 'fc')
# torchvision's second weights are trained longer and evaluated at resize 232.
V2 = Preprocessing(resize=232)
TORCHVISION = {
    18: _torchvision(Weights('resnet18-f37072fd.pth', 69.758)),
    34: _torchvision(Weights('resnet34-b627a593.pth', 73.314)),
    50: _torchvision(Weights('resnet50-0676ba61.pth', 76.13),
                     Weights('resnet50-11ad3fa6.pth', 80.858, V2)),
    101: _torchvision(Weights('resnet101-63fe2227.pth', 77.374),
                      Weights('resnet101-cd907fc2.pth', 81.886, V2)),
    152: _torchvision(Weights('resnet152-394f9c45.pth', 78.312),
                      Weights('resnet152-f82ba261.pth', 82.284, V2)),
}

register_model('resnet18_cifar', imagenet_resnet(18, stem='cifar'), image(32), 'resnet', classes=10)
register_model('resnet1d', functools.partial(ResNet, stage_sizes=(2, 2, 2), width=32, stem='cifar',
                                             stem_kernel=7), (40, 1), 'resnet', classes=10)
for _depth in IMAGENET_DEPTHS:
  register_model(f'resnet{_depth}', imagenet_resnet(_depth), image(224), 'resnet',
                 TORCHVISION[_depth])
  register_model(f'plain{_depth}', imagenet_resnet(_depth, shortcut='none'), image(224), 'resnet')
for _depth in (18, 34):
  register_model(f'preact_resnet{_depth}', imagenet_resnet(_depth, block='preact'), image(224),
                 'resnet')
for _depth in CIFAR_DEPTHS:
  for _prefix, _kwargs in (('resnet', {}), ('plain', {'shortcut': 'none'}),
                           ('highway', {'shortcut': 'gated'}),
                           ('preact_resnet', {'block': 'preact', 'projection': 'conv'})):
    register_model(f'{_prefix}{_depth}', cifar_resnet(_depth, **_kwargs), image(32), 'resnet',
                   classes=10)
register_model('resnext50_32x4d', imagenet_resnet(50, groups=32, width_per_group=4), image(224),
               'resnet', _torchvision(Weights('resnext50_32x4d-7cdf4587.pth', 77.618),
                                      Weights('resnext50_32x4d-1a0047aa.pth', 81.198, V2)))
register_model('wide_resnet50_2', imagenet_resnet(50, width_per_group=128), image(224), 'resnet',
               _torchvision(Weights('wide_resnet50_2-95faca4d.pth', 78.468),
                            Weights('wide_resnet50_2-9ba9bcbe.pth', 81.602, V2)))
