"""A window's taps: the slices of an input that each tap of a kernel or pooling window meets, and
the transpose of taking them, for inputs [N, *spatial, C] (convolution and pooling share both).

XLA's own transpose of strided slices pads each cotangent with holes and tests every tap at every
input position; `transpose` sums them one phase of the stride at a time instead.
"""

import itertools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax


def pad(x: jax.Array, padding: Sequence[tuple[int, int]], value=0) -> jax.Array:
  """``x`` with (lo, hi) of ``value`` around each spatial dim; negative amounts crop."""
  return lax.pad(x, jnp.asarray(value, x.dtype),
                 ((0, 0, 0), *((lo, hi, 0) for lo, hi in padding), (0, 0, 0)))


def along(x: jax.Array, axis: int, k: int, stride: int, step: int) -> list[jax.Array]:
  """For each of a window's ``k`` taps along ``axis`` (``step`` apart), the slice of ``x`` it meets
  at every output position along that axis. ``x`` is already padded."""
  out = (x.shape[axis] - step * (k - 1) - 1) // stride + 1
  return [lax.slice_in_dim(x, t * step, t * step + (out - 1) * stride + 1, stride, axis)
          for t in range(k)]


def reach(size: int, out: int, k: int, stride: int, step: int, lo: int) -> list[tuple[int, int]]:
  """For each of a window's ``k`` taps (``step`` apart) along a dim of ``size`` inputs padded by
  ``lo`` in front: the (first, last + 1) output positions, of ``out``, whose tap meets an input
  rather than padding (first >= last where none does). Output q's tap t meets input
  q * stride + t * step - lo."""
  return [(max(0, -((t * step - lo) // stride)), min(out, (size - 1 + lo - t * step) // stride + 1))
          for t in range(k)]


def windows(x: jax.Array, window: Sequence[int], strides: Sequence[int],
            dilation: Sequence[int]) -> list[jax.Array]:
  """For every tap (row-major over ``window``), the values of the padded ``x`` it meets at each
  output position: [N, *S_out, C]."""
  slices = [x]
  for axis, (k, stride, step) in enumerate(zip(window, strides, dilation), start=1):
    slices = [part for piece in slices for part in along(piece, axis, k, stride, step)]
  return slices


def transpose(term: Callable[..., jax.Array], arrays: Sequence[jax.Array],
              window: Sequence[int], sizes: Sequence[int], strides: Sequence[int],
              padding: Sequence[tuple[int, int]], dilation: Sequence[int]) -> jax.Array:
  """The transpose of `windows` of ``pad(x, padding)`` for ``x`` of spatial ``sizes``: every
  tap's cotangent summed back onto the input positions it came from. Tap ``t``'s cotangent is
  ``term(t, *arrays)`` (each of ``arrays`` [N, *S_out, ...]), taken on shifted slices of them:
  the arrays are padded once, not every tap's product.

  One phase of the stride at a time: the padded positions q * stride + r receive the term of
  ``arrays[q - m]`` from exactly the taps t with t * dilation = m * stride + r, a unit-stride
  shifted sum; the phases are then interleaved. On CPUs this is several times faster than XLA's
  transpose (a scatter) of strided depthwise layers and max pools (docs/performance.md)."""
  rank = len(strides)
  shape = arrays[0].shape
  # Per dim: the positions of each phase, each phase's (tap, m) pairs, and the largest m.
  lengths = [-(-(n + lo + hi) // s) for n, s, (lo, hi) in zip(sizes, strides, padding)]
  phases = [[[(t, (t * d - r) // s) for t in range(k) if t * d % s == r] for r in range(s)]
            for k, s, d in zip(window, strides, dilation)]
  farthest = [max(m for phase in dim for _, m in phase) for dim in phases]
  arrays = [pad(a, [(m, q - o) for m, q, o in zip(farthest, lengths, shape[1:-1])])
            for a in arrays]
  parts = []
  for phase in itertools.product(*phases):
    terms = []
    for tap in itertools.product(*phase):
      shifted = (slice(None),) + tuple(slice(m0 - m, m0 - m + q)
                                       for m0, (_, m), q in zip(farthest, tap, lengths))
      terms.append(term(np.ravel_multi_index([t for t, _ in tap], window),
                        *(a[shifted] for a in arrays)))
    parts.append(sum(terms) if terms else jnp.zeros((shape[0], *lengths, shape[-1]),
                                                    arrays[0].dtype))
  return pad(interleave(parts, strides), [(-lo, n + lo - q * s) for n, (lo, _), q, s in
                                          zip(sizes, padding, lengths, strides)])


def interleave(parts: Sequence[jax.Array], strides: Sequence[int]) -> jax.Array:
  """The phases of a stride woven together: ``parts`` [N, *lengths, C], one per phase (row-major
  over ``strides``), become [N, *(lengths * strides), C], position q * s + r along each dim taken
  from phase r's position q."""
  if len(parts) == 1:
    return parts[0]
  rank = len(strides)
  n, *lengths, channels = parts[0].shape
  # [*strides, N, *lengths, C] -> [N, length_0, stride_0, length_1, stride_1, ..., C]
  grid = jnp.stack(parts).reshape(*strides, *parts[0].shape).transpose(
      rank, *(axis for d in range(rank) for axis in (rank + 1 + d, d)), 2 * rank + 1)
  return grid.reshape(n, *(q * s for q, s in zip(lengths, strides)), channels)
