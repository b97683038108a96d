"""The plain forms a convolution computes in, any platform: XLA's native convolution, and the
'matmul' forms (the matrix product of the patches, a 1x1 kernel's plain product, a depthwise
kernel's sum of shifted copies), which `cnn_jax.layers.convolve` lists and picks between. Their
gradients are JAX's own; `cpu_rules` gives some of them backward passes of their own for CPUs."""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

from cnn_jax.layers import taps


def dimension_numbers(rank: int) -> lax.ConvDimensionNumbers:
  # Channels last for any spatial rank: input/output [N, *spatial, C], kernel [*spatial, in, out].
  spatial = tuple(range(1, rank + 1))
  return lax.ConvDimensionNumbers(lhs_spec=(0, rank + 1) + spatial,
                                  rhs_spec=(rank + 1, rank) + tuple(range(rank)),
                                  out_spec=(0, rank + 1) + spatial)


def tap_patches(x: jax.Array, window: Sequence[int], strides: Sequence[int],
             dilation: Sequence[int]) -> jax.Array:
  """The windows of every kernel tap side by side: [N, *S_out, prod(window) * C], columns in the
  kernel's (*window, C) order."""
  # One spatial dim at a time, the last first (its taps become the innermost columns): a few
  # concatenations of wide slices copy faster on CPUs than one of a narrow slice per tap.
  for axis in reversed(range(1, len(window) + 1)):
    x = jnp.concatenate(taps.along(x, axis, window[axis - 1], strides[axis - 1],
                                    dilation[axis - 1]), axis=-1)
  return x


def tap_planes(x: jax.Array, window: Sequence[int], strides: Sequence[int],
            padding: Sequence[tuple[int, int]], dilation: Sequence[int]) -> jax.Array:
  """A single input channel's patches, taps first: [taps, N, *S_out, 1], each tap's window a plane
  of its own. Side by side, the patches would be written one value per tap at a time, which costs
  more than the planes' contiguous copies (docs/performance.md)."""
  return jnp.stack(taps.windows(taps.pad(x, padding), window, strides, dilation))


def plane_product(planes: jax.Array, kernel: jax.Array, precision) -> jax.Array:
  """A single input channel's convolution from its planes (`tap_planes`) [taps, N, *S_out, 1]:
  the product taken transposed, [F, positions], then moved to [N, *S_out, F]."""
  product = jnp.dot(kernel.reshape(-1, kernel.shape[-1]).T, planes.reshape(len(planes), -1),
                    precision=precision)
  return jnp.moveaxis(product.reshape(-1, *planes.shape[1:-1]), 0, -1)


def patch_product(x, kernel, strides, padding, dilation, precision) -> jax.Array:
  """im2col: the patches times the kernel as a matrix, whose rows are (tap, input channel) in the
  order of the taps side by side."""
  rank = kernel.ndim - 2
  if x.shape[-1] == 1:
    return plane_product(tap_planes(x, kernel.shape[:rank], strides, padding, dilation), kernel,
                         precision)
  patches = tap_patches(taps.pad(x, padding), kernel.shape[:rank], strides, dilation)
  # As one [positions, columns] matrix: the product's transposes (the gradients) then contract
  # a leading dim of 2-D operands, which XLA's CPU dot takes as they are; from the 4-D form it
  # would copy dy transposed first, which costs more than the whole kernel gradient.
  product = jnp.dot(patches.reshape(-1, patches.shape[-1]), kernel.reshape(-1, kernel.shape[-1]),
                    precision=precision)
  return product.reshape(*patches.shape[:-1], kernel.shape[-1])


def shift_sum(x, kernel, strides, padding, dilation) -> jax.Array:
  """A depthwise convolution, one input channel per output channel: a kernel row per tap."""
  slices = taps.windows(taps.pad(x, padding), kernel.shape[:-2], strides, dilation)
  return sum(tap * row for tap, row in zip(slices, kernel.reshape(-1, kernel.shape[-1])))


def native(x, kernel, strides, padding, dilation, precision, input_dilation=None,
            feature_group_count=1) -> jax.Array:
  return lax.conv_general_dilated(
      x, kernel, window_strides=strides, padding=padding, lhs_dilation=input_dilation,
      rhs_dilation=dilation, dimension_numbers=dimension_numbers(kernel.ndim - 2),
      feature_group_count=feature_group_count, precision=precision)
