"""Convolution modules, channels last, for 1-D, 2-D and 3-D inputs.

Every module here takes ``x`` of shape [N, *spatial, C]; the spatial rank comes from the input when
``kernel_size`` is an int. Padding accepts every spec of `cnn_jax.arithmetic` ('VALID', 'SAME',
'FULL', 'CAUSAL', an int, or per-dimension ints / (lo, hi) pairs).
"""

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.linen.dtypes import promote_dtype
from jax import lax

from cnn_jax import arithmetic
from cnn_jax.arithmetic import Padding
from cnn_jax.layers.convolve import convolve

Initializer = Callable[..., jax.Array]
IntOrSeq = int | Sequence[int]


def _spatial_rank(x: jax.Array, kernel_size: IntOrSeq, module: str) -> int:
  rank = x.ndim - 2
  if rank < 1 or (not isinstance(kernel_size, int) and len(kernel_size) != rank):
    raise ValueError(
        f'{module} got an input of shape {x.shape} and kernel_size={kernel_size}: expected '
        f'[N, *spatial, C] with as many spatial dims as kernel_size has entries. Add a batch '
        'axis with x[None] or a channel axis with x[..., None].')
  return rank


def _conv(module: nn.Module, x: jax.Array, features: int, groups: int,
          flip_kernel: bool = False) -> jax.Array:
  """The body shared by `Conv` and `DepthwiseConv`: make the parameters, then call `convolve`."""
  name = type(module).__name__
  rank = _spatial_rank(x, module.kernel_size, name)
  kernel_size = arithmetic.as_tuple(module.kernel_size, rank, 'kernel_size')
  strides = arithmetic.as_tuple(module.strides, rank, 'strides')
  dilation = arithmetic.as_tuple(module.kernel_dilation, rank, 'kernel_dilation')
  in_features = x.shape[-1]
  if in_features % groups or features % groups:
    raise ValueError(f'{name}: input channels ({in_features}) and features ({features}) must both '
                     f'be divisible by feature_group_count={groups}.')
  geometry = arithmetic.conv_geometry(x.shape[1:-1], kernel_size, strides, module.padding, dilation)
  kernel = module.param('kernel', module.kernel_init,
                        (*kernel_size, in_features // groups, features), module.param_dtype)
  bias = (module.param('bias', module.bias_init, (features,), module.param_dtype)
          if module.use_bias else None)
  x, kernel, bias = promote_dtype(x, kernel, bias, dtype=module.dtype)
  if flip_kernel:
    kernel = jnp.flip(kernel, axis=tuple(range(rank)))
  y = convolve(x, kernel, strides=strides, padding=geometry.padding, kernel_dilation=dilation,
               feature_group_count=groups, precision=module.precision, impl=module.conv_impl)
  return y if bias is None else y + bias


class Conv(nn.Module):
  """N-D convolution layer (cross-correlation, as in every deep-learning library).

  Attributes:
    features: number of output channels (filters).
    kernel_size: window size, an int for every spatial dim or one per dim.
    strides: window step.
    padding: any padding spec of `cnn_jax.arithmetic`.
    kernel_dilation: spacing between kernel taps (atrous convolution).
    feature_group_count: channel groups; ``C`` makes a depthwise convolution.
    use_bias: add one bias per output channel.
    flip_kernel: flip the kernel in every spatial dim first, giving the true convolution
      ``y[i] = sum_m x[i - m] w[m]`` (up to the output offset) instead of cross-correlation.
    dtype: computation dtype (default: inferred from input and params).
    param_dtype: parameter dtype.
    precision: XLA precision of the convolution.
    kernel_init: kernel initializer, shape [*kernel_size, C/groups, features].
    bias_init: bias initializer.
    conv_impl: how to compute it, 'auto' | 'xla' | 'matmul' | 'mixed' (see
      `cnn_jax.layers.convolve`);
      None: the form in force where the model is traced (``config.conv_impl`` in training).
  """
  features: int
  kernel_size: IntOrSeq
  strides: IntOrSeq = 1
  padding: Padding = 'SAME'
  kernel_dilation: IntOrSeq = 1
  feature_group_count: int = 1
  use_bias: bool = True
  flip_kernel: bool = False
  dtype: Any = None
  param_dtype: Any = jnp.float32
  precision: Any = None
  kernel_init: Initializer = nn.initializers.lecun_normal()
  bias_init: Initializer = nn.initializers.zeros
  conv_impl: str | None = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """[N, *S, C] -> [N, *S', features]."""
    return _conv(self, x, self.features, self.feature_group_count, self.flip_kernel)


class DepthwiseConv(nn.Module):
  """One filter bank per input channel: ``C -> C * depth_multiplier``, channels never mix.

  Attributes are those of `Conv`, with ``depth_multiplier`` output channels per input channel in
  place of ``features`` and ``feature_group_count``.
  """
  kernel_size: IntOrSeq
  depth_multiplier: int = 1
  strides: IntOrSeq = 1
  padding: Padding = 'SAME'
  kernel_dilation: IntOrSeq = 1
  use_bias: bool = True
  dtype: Any = None
  param_dtype: Any = jnp.float32
  precision: Any = None
  kernel_init: Initializer = nn.initializers.lecun_normal()
  bias_init: Initializer = nn.initializers.zeros
  conv_impl: str | None = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """[N, *S, C] -> [N, *S', C * depth_multiplier]."""
    channels = x.shape[-1]
    return _conv(self, x, channels * self.depth_multiplier, channels)


class SeparableConv(nn.Module):
  """Depthwise-separable convolution: a `DepthwiseConv` (no bias) then a pointwise 1x1 `Conv`.

  Parameters: ``prod(k)*C*m + C*m*features (+features)`` in place of ``prod(k)*C*features``.
  """
  features: int
  kernel_size: IntOrSeq
  depth_multiplier: int = 1
  strides: IntOrSeq = 1
  padding: Padding = 'SAME'
  kernel_dilation: IntOrSeq = 1
  use_bias: bool = True
  dtype: Any = None
  param_dtype: Any = jnp.float32
  precision: Any = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """[N, *S, C] -> [N, *S', features]."""
    common = dict(dtype=self.dtype, param_dtype=self.param_dtype, precision=self.precision)
    x = DepthwiseConv(self.kernel_size, self.depth_multiplier, self.strides, self.padding,
                      self.kernel_dilation, use_bias=False, name='depthwise', **common)(x)
    return Conv(self.features, 1, use_bias=self.use_bias, name='pointwise', **common)(x)


class SpatiallySeparableConv(nn.Module):
  """A k1 x k2 x ... convolution factored into one 1-D convolution per spatial dim.

  In 2-D: a (k1 x 1) convolution to ``features`` channels (no bias), then a (1 x k2) one
  (``features -> features``). Costs ``O(k1 + k2)`` per output in place of ``O(k1 * k2)``; a kernel
  of rank 1 (see `separable_factors`) is represented exactly.
  """
  features: int
  kernel_size: Sequence[int]
  strides: IntOrSeq = 1
  padding: Padding = 'SAME'
  kernel_dilation: IntOrSeq = 1
  use_bias: bool = True
  dtype: Any = None
  param_dtype: Any = jnp.float32
  precision: Any = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """[N, *S, C] -> [N, *S', features]."""
    rank = _spatial_rank(x, self.kernel_size, 'SpatiallySeparableConv')
    strides = arithmetic.as_tuple(self.strides, rank, 'strides')
    dilation = arithmetic.as_tuple(self.kernel_dilation, rank, 'kernel_dilation')
    pads = arithmetic.conv_geometry(x.shape[1:-1], self.kernel_size, strides, self.padding,
                                    dilation).padding
    for axis, k in enumerate(self.kernel_size):
      # Each pass touches one spatial dim only: the rest see a size-1 kernel, stride 1, no padding.
      def only(value, default):
        return tuple(value if a == axis else default for a in range(rank))
      x = Conv(self.features, only(k, 1), strides=only(strides[axis], 1),
               padding=only(pads[axis], (0, 0)), kernel_dilation=only(dilation[axis], 1),
               use_bias=self.use_bias and axis == rank - 1, dtype=self.dtype,
               param_dtype=self.param_dtype, precision=self.precision, name=f'axis{axis}')(x)
    return x


def separable_factors(kernel: np.ndarray, rtol: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
  """Factors a rank-1 2-D kernel as ``K = outer(column, row)`` via the SVD ``K = s1 u1 v1^T``.

  Args:
    kernel: a [kh, kw] kernel.
    rtol: singular values below ``rtol * s1`` count as zero.

  Returns:
    ``(column [kh], row [kw])`` with ``np.outer(column, row) == kernel``; the scale ``s1`` is split
    evenly (``sqrt(s1)`` each), the sign chosen so the column's largest entry is positive.

  Raises:
    ValueError: if the kernel's rank is not 1; the message lists the singular values.
  """
  kernel = np.asarray(kernel, dtype=np.float64)
  if kernel.ndim != 2:
    raise ValueError(f'separable_factors takes a 2-D kernel, got shape {kernel.shape}.')
  u, s, vt = np.linalg.svd(kernel)
  rank = int(np.sum(s > rtol * s[0])) if s[0] > 0 else 0
  if rank != 1:
    raise ValueError(f'The kernel has rank {rank} (singular values {np.round(s, 6).tolist()}); only '
                     'a rank-1 kernel factors exactly into a column times a row.')
  column, row = u[:, 0] * np.sqrt(s[0]), vt[0] * np.sqrt(s[0])
  sign = np.sign(column[np.argmax(np.abs(column))])
  return column * sign, row * sign


class ConvTranspose(nn.Module):
  """Transposed (fractionally strided) convolution: the adjoint of `Conv` with the same arguments.

  The output size is ``(i-1)*s + d*(k-1) + 1 - lo - hi + output_padding``; an int ``padding=p``
  gives PyTorch's ``(i-1)*s + d*(k-1) + 1 - 2p + output_padding``. ``padding`` means what it means
  for the convolution being transposed ('SAME' gives an output of ``i*s``). The kernel has the
  layout of that convolution, [*kernel_size, features, C]: ``<Conv(x), y> == <x, ConvTranspose(y)>``
  when both use the same kernel.

  Attributes:
    features: output channels (the input channels of the convolution being transposed).
    kernel_size, strides, padding, kernel_dilation, use_bias, dtype, param_dtype, precision,
    kernel_init, bias_init: as in `Conv`.
    output_padding: extra rows at the end of each dim, in ``[0, max(stride, dilation))``; picks
      which of the input sizes a strided convolution maps to the same output this one recovers.
  """
  features: int
  kernel_size: IntOrSeq
  strides: IntOrSeq = 1
  padding: Padding = 0
  kernel_dilation: IntOrSeq = 1
  output_padding: IntOrSeq = 0
  use_bias: bool = True
  dtype: Any = None
  param_dtype: Any = jnp.float32
  precision: Any = None
  kernel_init: Initializer = nn.initializers.lecun_normal()
  bias_init: Initializer = nn.initializers.zeros

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """[N, *S, C] -> [N, *S', features]."""
    rank = _spatial_rank(x, self.kernel_size, 'ConvTranspose')
    kernel_size = arithmetic.as_tuple(self.kernel_size, rank, 'kernel_size')
    strides = arithmetic.as_tuple(self.strides, rank, 'strides')
    dilation = arithmetic.as_tuple(self.kernel_dilation, rank, 'kernel_dilation')
    output_padding = arithmetic.as_tuple(self.output_padding, rank, 'output_padding')
    # Validates the sizes before any parameter or compile.
    forward_pads = arithmetic.conv_transpose_geometry(x.shape[1:-1], kernel_size, strides,
                                                      self.padding, dilation,
                                                      output_padding).padding
    kernel = self.param('kernel', self.kernel_init, (*kernel_size, self.features, x.shape[-1]),
                        self.param_dtype)
    bias = (self.param('bias', self.bias_init, (self.features,), self.param_dtype)
            if self.use_bias else None)
    x, kernel, bias = promote_dtype(x, kernel, bias, dtype=self.dtype)
    # The adjoint of a strided correlation: spread the input by the stride, correlate with the
    # spatially flipped kernel (in/out swapped), padding each side by (dilated kernel - 1 - pad).
    adjoint = jnp.swapaxes(jnp.flip(kernel, axis=tuple(range(rank))), -1, -2)
    pads = [(d * (k - 1) - lo, d * (k - 1) - hi + op)
            for k, d, (lo, hi), op in zip(kernel_size, dilation, forward_pads, output_padding)]
    y = convolve(x, adjoint, strides=(1,) * rank, padding=pads, kernel_dilation=dilation,
                 input_dilation=strides, precision=self.precision)
    return y if bias is None else y + bias


def conv_matrix(kernel: np.ndarray, input_size: Sequence[int], strides: IntOrSeq = 1,
                padding: Padding = 'VALID', dilation: IntOrSeq = 1) -> np.ndarray:
  """The convolution as a (doubly block) Toeplitz matrix: ``Conv(x).ravel() == W @ x.ravel()``.

  Built by pushing every basis image through `convolve`, so it is the layer's own linear map.

  Args:
    kernel: [*K, C, F] kernel.
    input_size: spatial input size.

  Returns:
    ``W`` of shape [prod(S') * F, prod(S) * C] for single-example inputs [1, *S, C].
  """
  kernel = jnp.asarray(kernel)
  rank = kernel.ndim - 2
  strides = arithmetic.as_tuple(strides, rank, 'strides')
  dilation = arithmetic.as_tuple(dilation, rank, 'kernel_dilation')
  pads = arithmetic.conv_geometry(input_size, kernel.shape[:rank], strides, padding,
                                  dilation).padding
  channels = kernel.shape[-2]
  size = int(np.prod(input_size)) * channels
  basis = jnp.eye(size, dtype=kernel.dtype).reshape(size, *input_size, channels)
  columns = convolve(basis, kernel, strides=strides, padding=pads, kernel_dilation=dilation,
                     precision=lax.Precision.HIGHEST)
  return np.asarray(columns.reshape(size, -1).T)
