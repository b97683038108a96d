"""Pooling and un-pooling, channels last, any spatial rank.

Signatures follow flax: ``f(x, window_shape, strides=None, padding='VALID')`` with ``x`` of shape
[N, *spatial, C]; ``strides=None`` means 1 in every dim (pass ``strides=window_shape`` for the usual
non-overlapping pooling). ``padding`` takes every spec of `cnn_jax.arithmetic`.
"""

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from cnn_jax import arithmetic
from cnn_jax.arithmetic import Padding
from cnn_jax.layers import cpu_rules, taps

IntOrSeq = int | Sequence[int]


def _resolve(x: jax.Array, window_shape: IntOrSeq, strides: IntOrSeq | None, padding: Padding):
  rank = x.ndim - 2
  if rank < 1:
    raise ValueError(f'Pooling expects [N, *spatial, C], got shape {x.shape}; add a batch axis '
                     'with x[None] or a channel axis with x[..., None].')
  window = arithmetic.as_tuple(window_shape, rank, 'window_shape')
  strides = arithmetic.as_tuple(1 if strides is None else strides, rank, 'strides')
  geometry = arithmetic.conv_geometry(x.shape[1:-1], window, strides, padding)
  return window, strides, geometry.padding


def _reduce(x, init, op, window, strides, pads):
  return lax.reduce_window(x, init, op, (1, *window, 1), (1, *strides, 1),
                           ((0, 0), *pads, (0, 0)))


def max_pool(x: jax.Array, window_shape: IntOrSeq, strides: IntOrSeq | None = None,
             padding: Padding = 'VALID') -> jax.Array:
  """Maximum over each window; padding never wins. [N, *S, C] -> [N, *S', C].

  The gradient goes to each window's first maximum (row-major). Under the 'mixed' convolution
  form (`cnn_jax.layers.convolve`, the CPU default) it is summed back one phase of the stride at
  a time, a reverse-mode-only rule like that form's convolutions: on CPUs XLA's own scatter is
  several times slower (``./launch.sh bench --only=max_pool``; docs/performance.md)."""
  window, strides, pads = _resolve(x, window_shape, strides, padding)
  if cpu_rules.in_force():
    return _max_pool(x, window, strides, pads)
  return _reduce(x, -jnp.inf, lax.max, window, strides, pads)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _max_pool(x, window, strides, pads):
  return _reduce(x, -jnp.inf, lax.max, window, strides, pads)


def _max_pool_forward(x, window, strides, pads):
  pooled = _max_pool(x, window, strides, pads)
  return pooled, (x, pooled)


def _max_pool_backward(window, strides, pads, residuals, dy):
  x, pooled = residuals
  first = _first_maximum(x, pooled, window, strides, pads)
  return (taps.transpose(lambda t, dy, first: jnp.where(first == t, dy, 0), [dy, first], window,
                         x.shape[1:-1], strides, pads, (1,) * len(window)),)


def _first_maximum(x, pooled, window, strides, pads) -> jax.Array:
  """Per window, the first tap (row-major) holding its maximum ``pooled``, or a NaN in it, as
  `jnp.argmax` picks, never one in the padding; one pass over the taps, without stacking copies
  of ``x``."""
  slices = taps.windows(taps.pad(x, pads, -jnp.inf), window, strides, (1,) * len(window))
  first = jnp.full(pooled.shape, len(slices), jnp.int32)
  for t in reversed(range(len(slices))):
    first = jnp.where((slices[t] == pooled) | jnp.isnan(slices[t]), t, first)
  # The padding is -inf too: where a window's inputs are all -inf, a padded tap before them ties.
  # Their first is then the window's first tap on an input: per dim, the first past the padding.
  inside = [np.maximum(lo - np.arange(n) * s, 0)
            for n, s, (lo, _) in zip(pooled.shape[1:-1], strides, pads)]
  first_inside = np.ravel_multi_index(np.meshgrid(*inside, indexing='ij'), window)
  return jnp.where(pooled == -jnp.inf, first_inside[None, ..., None].astype(np.int32), first)


_max_pool.defvjp(_max_pool_forward, _max_pool_backward)


def avg_pool(x: jax.Array, window_shape: IntOrSeq, strides: IntOrSeq | None = None,
             padding: Padding = 'VALID', count_include_pad: bool = True) -> jax.Array:
  """Mean over each window; with ``count_include_pad=False`` padded zeros are not counted."""
  window, strides, pads = _resolve(x, window_shape, strides, padding)
  total = _reduce(x, 0.0, lax.add, window, strides, pads)
  if count_include_pad:
    return total / math.prod(window)
  counts = _reduce(jnp.ones((1, *x.shape[1:-1], 1), x.dtype), 0.0, lax.add, window, strides, pads)
  return total / counts


def lp_pool(x: jax.Array, window_shape: IntOrSeq, strides: IntOrSeq | None = None,
            padding: Padding = 'VALID', p: float = 2.0) -> jax.Array:
  """``(sum |x|^p)^(1/p)`` over each window: L2-norm pooling for ``p=2``, max pooling as p -> inf."""
  window, strides, pads = _resolve(x, window_shape, strides, padding)
  total = _reduce(jnp.abs(x) ** p, 0.0, lax.add, window, strides, pads)
  # The root has an infinite slope at 0: route all-zero windows through a safe value.
  positive = total > 0
  return jnp.where(positive, jnp.where(positive, total, 1.0) ** (1.0 / p), 0.0)


def _windows(x: jax.Array, window: Sequence[int], strides: Sequence[int],
             pads: Sequence[tuple[int, int]], pad_value) -> jax.Array:
  """Every window as a trailing axis: [N, *S, C] -> [N, *S', C, prod(window)]."""
  return jnp.stack(taps.windows(taps.pad(x, pads, pad_value), window, strides,
                                (1,) * len(window)), axis=-1)


def stochastic_pool(x: jax.Array, window_shape: IntOrSeq, strides: IntOrSeq | None = None,
                    padding: Padding = 'VALID', *, rng: jax.Array | None = None,
                    train: bool = False) -> jax.Array:
  """Stochastic pooling (Zeiler & Fergus, 2013) of non-negative activations (e.g. after ReLU).

  In each window, ``p_i = a_i / sum(a)``. Training (``train=True``, ``rng`` given) outputs one
  activation sampled with probabilities ``p``; evaluation outputs the expectation ``sum(p_i a_i)``.
  Negative inputs are treated as 0 in ``p``; an all-zero window gives 0.
  """
  window, strides, pads = _resolve(x, window_shape, strides, padding)
  values = _windows(x, window, strides, pads, 0.0)
  weights = jnp.maximum(values, 0.0)
  total = weights.sum(-1, keepdims=True)
  nonzero = total > 0
  probs = jnp.where(nonzero, weights / jnp.where(nonzero, total, 1.0), 1.0 / values.shape[-1])
  if not train:
    return (probs * values).sum(-1)
  if rng is None:
    raise ValueError('stochastic_pool(train=True) samples an activation per window and needs a '
                     'PRNG key: pass rng=key (e.g. self.make_rng("dropout") inside a module).')
  # Sampling is not differentiated; log(0) = -inf makes a zero activation impossible to pick.
  pick = jax.random.categorical(rng, jnp.log(lax.stop_gradient(probs)), axis=-1)
  return jnp.take_along_axis(values, pick[..., None], axis=-1)[..., 0]


def global_avg_pool(x: jax.Array, keepdims: bool = False) -> jax.Array:
  """Mean over all spatial dims: [N, *S, C] -> [N, C] (or [N, 1, ..., 1, C])."""
  return x.mean(axis=tuple(range(1, x.ndim - 1)), keepdims=keepdims)


def global_max_pool(x: jax.Array, keepdims: bool = False) -> jax.Array:
  """Maximum over all spatial dims: [N, *S, C] -> [N, C] (or [N, 1, ..., 1, C])."""
  return x.max(axis=tuple(range(1, x.ndim - 1)), keepdims=keepdims)


def channel_max_pool(x: jax.Array, pool_size: int) -> jax.Array:
  """Cross-channel (maxout) pooling: the max of each group of ``pool_size`` adjacent channels."""
  channels = x.shape[-1]
  if channels % pool_size:
    raise ValueError(f'channel_max_pool: {channels} channels do not split into groups of '
                     f'pool_size={pool_size}; use a pool_size that divides the channel count.')
  return x.reshape(*x.shape[:-1], channels // pool_size, pool_size).max(-1)


def max_pool_with_indices(x: jax.Array, window_shape: IntOrSeq, strides: IntOrSeq | None = None,
                          padding: Padding = 'VALID') -> tuple[jax.Array, jax.Array]:
  """Max pooling that also returns where each maximum came from (SegNet's pooling indices).

  Returns:
    ``(pooled [N, *S', C], indices [N, *S', C])`` with ``indices`` the flat position of the maximum
    in the input's spatial dims (row-major over ``S``, per example and channel), as in PyTorch.
  """
  # The values through `max_pool`, whose gradient also goes to each window's first maximum, and
  # on CPUs by its faster rule.
  pooled = max_pool(x, window_shape, strides, padding)
  window, strides, pads = _resolve(x, window_shape, strides, padding)
  first = _first_maximum(x, lax.stop_gradient(pooled), window, strides, pads)
  spatial = x.shape[1:-1]
  positions = jnp.arange(math.prod(spatial), dtype=jnp.int32).reshape(1, *spatial, 1)
  position_taps = _windows(positions, window, strides, pads, -1)
  indices = jnp.take_along_axis(
      jnp.broadcast_to(position_taps, (*first.shape, position_taps.shape[-1])), first[..., None],
      axis=-1)[..., 0]
  return pooled, indices


def max_unpool(x: jax.Array, indices: jax.Array, output_shape: Sequence[int]) -> jax.Array:
  """Un-pooling: puts each value back where `max_pool_with_indices` found it, zeros elsewhere.

  Args:
    x: [N, *S', C] values (e.g. decoder features).
    indices: [N, *S', C] flat input positions from `max_pool_with_indices`.
    output_shape: the spatial shape ``S`` of the pooled input.

  Returns:
    [N, *S, C]; gradients flow to ``x`` through the positions.
  """
  if x.shape != indices.shape:
    raise ValueError(f'max_unpool: values {x.shape} and indices {indices.shape} must have the same '
                     'shape; pass the indices returned by max_pool_with_indices for this tensor.')
  n, channels = x.shape[0], x.shape[-1]
  size = int(np.prod(output_shape))
  flat_x = x.reshape(n, -1, channels)
  flat_i = indices.reshape(n, -1, channels)
  out = jnp.zeros((n, size, channels), x.dtype)
  out = out.at[jnp.arange(n)[:, None, None], flat_i, jnp.arange(channels)].set(flat_x)
  return out.reshape(n, *output_shape, channels)
