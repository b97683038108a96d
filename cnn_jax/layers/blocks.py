"""Building blocks that the architectures share.

Every block takes ``conv`` and ``norm`` as module factories (usually ``functools.partial``), so the
same block works with any convolution variant or normalisation:
  * ``conv(features, kernel_size, strides=..., use_bias=..., feature_group_count=...)``;
  * ``norm(use_running_average=..., scale_init=...)`` (e.g. ``partial(nn.BatchNorm, axis_name='data')``
    for per-device BatchNorm). ``norm=None`` means no normalisation and biased convolutions.
Blocks are called as ``block(x, train)``; ``train`` switches BatchNorm statistics, dropout and
stochastic depth.
"""

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnn_jax import arithmetic
from cnn_jax.layers.conv import Conv
from cnn_jax.layers.pooling import avg_pool, global_avg_pool, max_pool
from cnn_jax.layers.regularization import StochasticDepth

ModuleDef = Any
BatchNorm = functools.partial(nn.BatchNorm, momentum=0.9, epsilon=1e-5)


def _norm(norm: ModuleDef | None, x: jax.Array, train: bool, zero_init: bool = False) -> jax.Array:
  if norm is None:
    return x
  scale_init = nn.initializers.zeros if zero_init else nn.initializers.ones
  return norm(use_running_average=not train, scale_init=scale_init)(x)


class ConvNormAct(nn.Module):
  """conv -> norm -> activation, the unit most architectures are made of."""
  features: int
  kernel_size: int | tuple[int, ...]
  strides: int | tuple[int, ...] = 1
  feature_group_count: int = 1
  conv: ModuleDef = Conv
  norm: ModuleDef | None = BatchNorm
  act: Callable | None = nn.relu

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    x = self.conv(self.features, self.kernel_size, strides=self.strides,
                  feature_group_count=self.feature_group_count, use_bias=self.norm is None)(x)
    x = _norm(self.norm, x, train)
    return x if self.act is None else self.act(x)


def _needs_projection(x: jax.Array, features: int, strides) -> bool:
  strided = any(s != 1 for s in ((strides,) if isinstance(strides, int) else strides))
  return strided or x.shape[-1] != features


SHORTCUTS = ('identity', 'none', 'gated')
PROJECTIONS = ('conv', 'pad')


def _shortcut(x: jax.Array, features: int, strides, projection: str, conv: ModuleDef,
              norm: ModuleDef | None, train: bool) -> jax.Array:
  """Identity when shapes agree; else a 1x1 strided projection ('conv', He et al. option B) or
  subsampling plus zero channels ('pad', option A: no parameters, the CIFAR ResNets' choice)."""
  if not _needs_projection(x, features, strides):
    return x
  if projection == 'pad':
    strides = arithmetic.as_tuple(strides, x.ndim - 2, 'strides')
    x = x[(slice(None), *(slice(None, None, s) for s in strides))]
    return jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, features - x.shape[-1])])
  x = conv(features, 1, strides=strides, use_bias=norm is None, name='projection')(x)
  return _norm(norm, x, train)


def _check_options(block: nn.Module) -> None:
  if block.shortcut not in SHORTCUTS or block.projection not in PROJECTIONS:
    raise ValueError(f'{type(block).__name__}(shortcut={block.shortcut!r}, projection='
                     f'{block.projection!r}): expected shortcut in {SHORTCUTS} and projection in '
                     f'{PROJECTIONS}.')


def _residual_output(block: nn.Module, x: jax.Array, y: jax.Array, features: int,
                     train: bool) -> jax.Array:
  """The last norm of a residual branch ``y``, then the join with the input ``x``.

  'identity': ``act(y + shortcut(x))``; 'none' (the plain twin): ``act(y)``; 'gated' (highway,
  Srivastava et al., 2015): ``act(T y + (1 - T) shortcut(x))`` with the transform gate
  ``T = sigmoid(1x1 conv(x))``, its bias starting at -1 so the block starts mostly carrying ``x``.
  """
  y = _norm(block.norm, y, train, zero_init=block.zero_init_last and block.shortcut == 'identity')
  if block.shortcut == 'none':
    return block.act(y)
  y = StochasticDepth(block.drop_rate)(y, deterministic=not train)
  carried = _shortcut(x, features, block.strides, block.projection, block.conv, block.norm, train)
  if block.shortcut == 'identity':
    return block.act(y + carried)
  gate = nn.sigmoid(block.conv(features, 1, strides=block.strides, name='gate',
                               bias_init=nn.initializers.constant(-1.0))(x))
  return block.act(gate * y + (1.0 - gate) * carried)


class ResidualBlock(nn.Module):
  """Basic residual block: two 3x3 convolutions, ``act(F(x) + shortcut(x))`` (He et al., 2016).

  Attributes:
    features: output channels.
    strides: stride of the first convolution (and of the projection shortcut).
    shortcut: 'identity' (residual), 'none' (the plain twin of the degradation experiment) or
      'gated' (highway); see `_residual_output`.
    projection: how the shortcut changes shape: 'conv' (1x1 + norm) or 'pad' (parameter-free).
    zero_init_last: start the last norm's scale at 0, so the block starts as the identity.
    drop_rate: stochastic-depth drop probability of the residual branch.
  """
  features: int
  strides: int | tuple[int, ...] = 1
  conv: ModuleDef = Conv
  norm: ModuleDef | None = BatchNorm
  act: Callable = nn.relu
  shortcut: str = 'identity'
  projection: str = 'conv'
  zero_init_last: bool = True
  drop_rate: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    _check_options(self)
    y = self.conv(self.features, 3, strides=self.strides, use_bias=self.norm is None)(x)
    y = self.act(_norm(self.norm, y, train))
    y = self.conv(self.features, 3, use_bias=self.norm is None)(y)
    return _residual_output(self, x, y, self.features, train)


class BottleneckBlock(nn.Module):
  """Bottleneck residual block: 1x1 reduce -> 3x3 -> 1x1 expand to ``features * expansion``.

  Attributes:
    features: width of the 3x3 convolution; the block outputs ``features * expansion`` channels.
    strides: the block's stride, on the 3x3 convolution (ResNet v1.5, torchvision) or, with
      ``stride_in_3x3=False``, on the first 1x1 (the original paper, ResNet v1).
    expansion: output width over bottleneck width (4 in ResNet-50/101/152).
    groups: channel groups of the 3x3 convolution (ResNeXt's cardinality).
    shortcut, projection, zero_init_last, drop_rate: as in `ResidualBlock`.
  """
  features: int
  strides: int | tuple[int, ...] = 1
  expansion: int = 4
  groups: int = 1
  stride_in_3x3: bool = True
  conv: ModuleDef = Conv
  norm: ModuleDef | None = BatchNorm
  act: Callable = nn.relu
  shortcut: str = 'identity'
  projection: str = 'conv'
  zero_init_last: bool = True
  drop_rate: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    _check_options(self)
    bias = self.norm is None
    y = self.conv(self.features, 1, strides=1 if self.stride_in_3x3 else self.strides,
                  use_bias=bias)(x)
    y = self.act(_norm(self.norm, y, train))
    y = self.conv(self.features, 3, strides=self.strides if self.stride_in_3x3 else 1,
                  feature_group_count=self.groups, use_bias=bias)(y)
    y = self.act(_norm(self.norm, y, train))
    out = self.features * self.expansion
    y = self.conv(out, 1, use_bias=bias)(y)
    return _residual_output(self, x, y, out, train)


class PreActResidualBlock(nn.Module):
  """Pre-activation residual block (He et al., 2016b): ``x + F(x)`` with norm -> act before each conv.

  The output is not activated; a network of these ends with a final norm -> act.
  """
  features: int
  strides: int | tuple[int, ...] = 1
  conv: ModuleDef = Conv
  norm: ModuleDef | None = BatchNorm
  act: Callable = nn.relu
  drop_rate: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    pre = self.act(_norm(self.norm, x, train))
    bias = self.norm is None
    shortcut = x
    if _needs_projection(x, self.features, self.strides):
      # The projection reads the pre-activated input, as in the paper.
      shortcut = self.conv(self.features, 1, strides=self.strides, use_bias=bias,
                           name='projection')(pre)
    y = self.conv(self.features, 3, strides=self.strides, use_bias=bias)(pre)
    y = self.act(_norm(self.norm, y, train))
    y = self.conv(self.features, 3, use_bias=bias)(y)
    return shortcut + StochasticDepth(self.drop_rate)(y, deterministic=not train)


class HighwayBlock(nn.Module):
  """Convolutional highway block (Srivastava et al., 2015): ``H(x) * T(x) + x * (1 - T(x))``.

  ``T = sigmoid(conv(x))`` is the transform gate; its bias starts at ``gate_bias`` (negative), so
  the block starts by mostly carrying ``x`` through. Input and output channels are equal.
  """
  kernel_size: int | tuple[int, ...] = 3
  conv: ModuleDef = Conv
  norm: ModuleDef | None = BatchNorm
  act: Callable = nn.relu
  gate_bias: float = -1.0

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    features = x.shape[-1]
    h = self.conv(features, self.kernel_size, use_bias=self.norm is None, name='transform')(x)
    h = self.act(_norm(self.norm, h, train))
    t = nn.sigmoid(self.conv(features, self.kernel_size, name='gate',
                             bias_init=nn.initializers.constant(self.gate_bias))(x))
    return h * t + x * (1.0 - t)


class InceptionModule(nn.Module):
  """GoogLeNet's inception module: 1x1 | 1x1->3x3 | 1x1->5x5 | 3x3 max-pool->1x1, concatenated.

  The 1x1 reductions before the 3x3 and 5x5 convolutions keep the cost down (Szegedy et al., 2015).
  Output channels: ``features_1x1 + features_3x3 + features_5x5 + pool_features``;
  ``kernel_5x5`` is the third branch's kernel (3 in torchvision's GoogLeNet).
  """
  features_1x1: int
  reduce_3x3: int
  features_3x3: int
  reduce_5x5: int
  features_5x5: int
  pool_features: int
  kernel_5x5: int = 5
  conv: ModuleDef = Conv
  norm: ModuleDef | None = None
  act: Callable = nn.relu

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    unit = functools.partial(ConvNormAct, conv=self.conv, norm=self.norm, act=self.act)
    branch1 = unit(self.features_1x1, 1)(x, train)
    branch3 = unit(self.reduce_3x3, 1)(x, train)
    branch3 = unit(self.features_3x3, 3)(branch3, train)
    branch5 = unit(self.reduce_5x5, 1)(x, train)
    branch5 = unit(self.features_5x5, self.kernel_5x5)(branch5, train)
    pooled = max_pool(x, 3, strides=1, padding='SAME')
    branch_pool = unit(self.pool_features, 1)(pooled, train)
    return jnp.concatenate([branch1, branch3, branch5, branch_pool], axis=-1)


class DenseBlock(nn.Module):
  """DenseNet block: each layer sees the concatenation of all earlier feature maps.

  Layer: norm -> act -> 1x1 conv (``bottleneck_width * growth_rate``, DenseNet-B) -> norm -> act ->
  3x3 conv (``growth_rate``). Output channels: ``C + num_layers * growth_rate``.
  """
  num_layers: int
  growth_rate: int
  bottleneck_width: int = 4
  conv: ModuleDef = Conv
  norm: ModuleDef | None = BatchNorm
  act: Callable = nn.relu

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    bias = self.norm is None
    for _ in range(self.num_layers):
      y = self.act(_norm(self.norm, x, train))
      if self.bottleneck_width:
        y = self.conv(self.bottleneck_width * self.growth_rate, 1, use_bias=bias)(y)
        y = self.act(_norm(self.norm, y, train))
      y = self.conv(self.growth_rate, 3, use_bias=bias)(y)
      x = jnp.concatenate([x, y], axis=-1)
    return x


class Transition(nn.Module):
  """DenseNet transition: norm -> act -> 1x1 conv to ``floor(C * compression)`` -> 2x2 avg-pool."""
  compression: float = 0.5
  conv: ModuleDef = Conv
  norm: ModuleDef | None = BatchNorm
  act: Callable = nn.relu

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    x = self.act(_norm(self.norm, x, train))
    x = self.conv(int(x.shape[-1] * self.compression), 1, use_bias=self.norm is None)(x)
    return avg_pool(x, 2, strides=2)


class SqueezeExcite(nn.Module):
  """Squeeze-and-excitation (Hu et al., 2018): rescale channels by a gate computed from their means.

  ``x * gate(W2 act(W1 mean(x)))`` with ``W1: C -> reduced_features``; the gate is a sigmoid
  (MobileNet v3: a hard sigmoid).
  """
  reduced_features: int
  act: Callable = nn.relu
  gate: Callable = nn.sigmoid

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    s = global_avg_pool(x)
    s = self.act(nn.Dense(self.reduced_features, name='reduce')(s))
    s = self.gate(nn.Dense(x.shape[-1], name='expand')(s))
    return x * s.reshape(s.shape[0], *(1,) * (x.ndim - 2), s.shape[-1])


class MBConv(nn.Module):
  """Mobile inverted bottleneck (MobileNet-v2 / EfficientNet) with squeeze-and-excitation.

  1x1 expand (``expand_ratio``) -> k x k depthwise (stride) -> SE -> 1x1 linear projection, with an
  identity shortcut (and stochastic depth) when stride is 1 and channels are unchanged.

  Attributes:
    features: output channels.
    expand_ratio: hidden width over input width (1 skips the expansion).
    kernel_size: depthwise kernel.
    strides: depthwise stride.
    se_ratio: SE width as a fraction of the block's *input* channels (0 disables SE).
    drop_rate: stochastic-depth drop probability.
  """
  features: int
  expand_ratio: int = 6
  kernel_size: int = 3
  strides: int = 1
  se_ratio: float = 0.25
  drop_rate: float = 0.0
  conv: ModuleDef = Conv
  norm: ModuleDef | None = BatchNorm
  act: Callable = nn.swish

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    unit = functools.partial(ConvNormAct, conv=self.conv, norm=self.norm, act=self.act)
    in_features = x.shape[-1]
    hidden = in_features * self.expand_ratio
    y = unit(hidden, 1, name='expand')(x, train) if self.expand_ratio != 1 else x
    y = unit(hidden, self.kernel_size, strides=self.strides, feature_group_count=hidden,
             name='depthwise')(y, train)
    if self.se_ratio:
      y = SqueezeExcite(max(1, int(in_features * self.se_ratio)), act=self.act)(y)
    y = unit(self.features, 1, act=None, name='project')(y, train)
    if self.strides == 1 and in_features == self.features:
      y = x + StochasticDepth(self.drop_rate)(y, deterministic=not train)
    return y


class FusedMBConv(nn.Module):
  """EfficientNetV2's fused block: the 1x1 expansion and the depthwise conv of `MBConv` fused into
  one k x k convolution (stride), then a linear 1x1 projection (none when ``expand_ratio`` is 1:
  the k x k convolution outputs ``features`` directly), with an identity shortcut and stochastic
  depth when stride 1 keeps the width."""
  features: int
  expand_ratio: int = 4
  kernel_size: int = 3
  strides: int = 1
  drop_rate: float = 0.0
  conv: ModuleDef = Conv
  norm: ModuleDef | None = BatchNorm
  act: Callable = nn.swish

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    unit = functools.partial(ConvNormAct, conv=self.conv, norm=self.norm, act=self.act)
    hidden = x.shape[-1] * self.expand_ratio
    if self.expand_ratio == 1:
      y = unit(self.features, self.kernel_size, strides=self.strides, name='fused')(x, train)
    else:
      y = unit(hidden, self.kernel_size, strides=self.strides, name='fused')(x, train)
      y = unit(self.features, 1, act=None, name='project')(y, train)
    if self.strides == 1 and x.shape[-1] == self.features:
      y = x + StochasticDepth(self.drop_rate)(y, deterministic=not train)
    return y
