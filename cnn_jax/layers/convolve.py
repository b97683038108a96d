"""The one function through which every convolution module in `cnn_jax.layers` computes.

Modules resolve their arguments (kernel shapes, explicit padding) and call `convolve`; another
implementation of the same maths (e.g. an im2col matmul, faster on CPU) replaces this function alone.
"""

from collections.abc import Sequence

import jax
from jax import lax


def _dimension_numbers(rank: int) -> lax.ConvDimensionNumbers:
  # Channels last for any spatial rank: input/output [N, *spatial, C], kernel [*spatial, in, out].
  spatial = tuple(range(1, rank + 1))
  return lax.ConvDimensionNumbers(lhs_spec=(0, rank + 1) + spatial,
                                  rhs_spec=(rank + 1, rank) + tuple(range(rank)),
                                  out_spec=(0, rank + 1) + spatial)


def convolve(x: jax.Array, kernel: jax.Array, *, strides: Sequence[int],
             padding: Sequence[tuple[int, int]], kernel_dilation: Sequence[int],
             input_dilation: Sequence[int] | None = None, feature_group_count: int = 1,
             precision: lax.PrecisionLike = None) -> jax.Array:
  """Cross-correlates ``x`` [N, *S, C] with ``kernel`` [*K, C/groups, F] -> [N, *S', F].

  Args:
    x: input, channels last.
    kernel: weights, spatial dims first, then input channels per group, then output channels.
    strides: window step per spatial dim.
    padding: explicit (lo, hi) zeros per spatial dim; negative values crop.
    kernel_dilation: spacing of kernel taps per spatial dim.
    input_dilation: spacing inserted between input elements (transposed convolution), default 1.
    feature_group_count: number of channel groups (C for a depthwise convolution).
    precision: passed to XLA.
  """
  rank = kernel.ndim - 2
  return lax.conv_general_dilated(
      x, kernel, window_strides=tuple(strides), padding=tuple(padding),
      lhs_dilation=tuple(input_dilation) if input_dilation else None,
      rhs_dilation=tuple(kernel_dilation), dimension_numbers=_dimension_numbers(rank),
      feature_group_count=feature_group_count, precision=precision)
