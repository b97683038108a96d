"""Pooling and un-pooling against plain-numpy references; gradients of the custom ones."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads

from cnn_jax import arithmetic
from cnn_jax import layers as L
from cnn_jax.layers import convolve
from tests import reference


@st.composite
def pool_configs(draw):
  rank = draw(st.integers(1, 3))
  window = tuple(draw(st.integers(1, 3)) for _ in range(rank))
  strides = tuple(draw(st.integers(1, 3)) for _ in range(rank))
  padding = draw(st.sampled_from(['VALID', 'SAME', 'pairs']))
  if padding == 'pairs':
    # A window may never lie entirely in the padding: lo, hi < window.
    padding = [(draw(st.integers(0, w - 1)), draw(st.integers(0, w - 1))) for w in window]
  size = tuple(draw(st.integers(w, w + 4)) for w in window)
  return window, strides, padding, size


def _x(size, seed, positive=False):
  x = np.random.default_rng(seed).standard_normal((2, *size, 3))
  return np.abs(x) if positive else x


def _pads(window, strides, padding, size):
  return reference.explicit_padding(padding, size, window, strides, (1,) * len(window))


@pytest.mark.slow
@settings(max_examples=15, deadline=None)
@given(pool_configs(), st.integers(0, 2**16))
def test_pools_match_reference(cfg, seed):
  window, strides, padding, size = cfg
  x = _x(size, seed)
  pads = _pads(window, strides, padding, size)
  xj = jnp.asarray(x, jnp.float32)

  def check(got, reduce, pad_value=0.0):
    np.testing.assert_allclose(got, reference.pool(x, window, strides, pads, reduce, pad_value),
                               rtol=1e-5, atol=1e-5)

  check(L.max_pool(xj, window, strides, padding), lambda v, m: v.max(1), -np.inf)
  check(L.avg_pool(xj, window, strides, padding), lambda v, m: v.mean(1))
  check(L.avg_pool(xj, window, strides, padding, count_include_pad=False),
        lambda v, m: v.sum(1) / m.sum())
  check(L.lp_pool(xj, window, strides, padding), lambda v, m: np.sqrt((v ** 2).sum(1)))
  check(L.lp_pool(xj, window, strides, padding, p=3.0),
        lambda v, m: (np.abs(v) ** 3).sum(1) ** (1 / 3))
  positive = jnp.abs(xj)
  check(L.stochastic_pool(positive, window, strides, padding),
        lambda v, m: (np.abs(v) ** 2).sum(1) / np.maximum(np.abs(v).sum(1), 1e-30))
  pooled, indices = L.max_pool_with_indices(xj, window, strides, padding)
  np.testing.assert_array_equal(pooled, L.max_pool(xj, window, strides, padding))
  flat = np.asarray(xj).reshape(2, -1, 3)
  np.testing.assert_array_equal(
      np.take_along_axis(flat, np.asarray(indices).reshape(2, -1, 3), axis=1).reshape(pooled.shape),
      pooled)
  assert pooled.shape[1:-1] == arithmetic.pool_output_shape(size, window, strides, padding)


@pytest.mark.slow
@settings(max_examples=20, deadline=None)
@given(pool_configs(), st.integers(0, 2**16))
def test_max_pool_gradient_goes_to_each_windows_first_maximum_in_every_form(cfg, seed):
  """'mixed' (the CPU default) has a max-pool backward pass of its own: the gradient is XLA's,
  ties included (whole numbers, and zeros as after a ReLU), without XLA's select-and-scatter."""
  window, strides, padding, size = cfg
  x = jnp.asarray(np.maximum(np.round(_x(size, seed) * 2), 0), jnp.float32)
  weights = jnp.asarray(_x(L.max_pool(x, window, strides, padding).shape[1:-1], seed + 1))

  def grad(impl):  # the gradient, and its program (the form is read when it is traced)
    with convolve.use(impl):
      fn = jax.jit(jax.grad(lambda v: (L.max_pool(v, window, strides, padding) * weights).sum()))
      return fn(x), fn.lower(x).as_text()

  (mixed, program), (xla, _) = grad('mixed'), grad('xla')
  np.testing.assert_allclose(mixed, xla, rtol=1e-6, atol=1e-6)
  assert 'select_and_scatter' not in program
  # Forward mode needs XLA's own rule, as for the 'mixed' convolutions: the tangent at each
  # window's maximum (inputs without ties, whose maximum XLA may take from any tap).
  distinct, tangent = (jnp.asarray(_x(size, seed + s), jnp.float32) for s in (2, 3))

  def tangent_and_indices(v, t):
    _, out = jax.jvp(lambda v: L.max_pool(v, window, strides, padding), (v,), (t,))
    return out, L.max_pool_with_indices(v, window, strides, padding)[1]

  with convolve.use('xla'):
    got, indices = jax.jit(tangent_and_indices)(distinct, tangent)
  np.testing.assert_array_equal(
      got, np.take_along_axis(np.asarray(tangent).reshape(2, -1, 3),
                              np.asarray(indices).reshape(2, -1, 3), axis=1).reshape(got.shape))


@pytest.mark.slow
def test_a_window_of_only_minus_infinity_takes_an_input_not_the_padding():
  """Padding is -inf as well: the maximum, its gradient and its index still come from one of the
  window's inputs."""
  x = jnp.full((1, 4, 4, 1), -jnp.inf).at[0, 3, 3, 0].set(1.0)
  padding = [(1, 1), (1, 1)]
  pooled, indices = L.max_pool_with_indices(x, 3, strides=2, padding=padding)
  # Three windows start in the padding and hold only -inf: each one's first input wins.
  np.testing.assert_array_equal(indices[0, ..., 0], [[0, 1], [4, 15]])
  # The gradient goes there too under 'mixed' (XLA's own rule sends these windows' to the padding).
  dy = jnp.arange(1.0, 5.0).reshape(pooled.shape)
  with convolve.use('mixed'):
    _, vjp = jax.vjp(lambda v: L.max_pool(v, 3, strides=2, padding=padding), x)
  np.testing.assert_array_equal(vjp(dy)[0].ravel()[indices.ravel()], dy.ravel())
  assert float(vjp(dy)[0].sum()) == float(dy.sum())


def test_max_pool_default_stride_is_one_as_in_flax():
  x = jnp.arange(16.0).reshape(1, 4, 4, 1)
  assert L.max_pool(x, 2).shape == (1, 3, 3, 1)
  assert L.max_pool(x, 2, strides=2).shape == (1, 2, 2, 1)


def test_stochastic_pool_samples_in_proportion_to_activation():
  window = jnp.asarray([[1.0, 3.0], [0.0, 4.0]]).reshape(1, 2, 2, 1)
  x = jnp.tile(window, (4000, 1, 1, 1))
  samples = np.asarray(L.stochastic_pool(x, 2, 2, rng=jax.random.key(0), train=True)).ravel()
  for value, prob in ((1.0, 1 / 8), (3.0, 3 / 8), (4.0, 4 / 8)):
    assert abs(np.mean(samples == value) - prob) < 0.03
  assert not np.any(samples == 0.0)  # a zero activation has probability zero
  assert float(L.stochastic_pool(window, 2, 2)[0, 0, 0, 0]) == pytest.approx((1 + 9 + 16) / 8)
  assert float(L.stochastic_pool(jnp.zeros((1, 2, 2, 1)), 2, 2, rng=jax.random.key(0),
                                 train=True).sum()) == 0.0
  with pytest.raises(ValueError, match='needs a PRNG key'):
    L.stochastic_pool(window, 2, 2, train=True)


def test_global_and_channel_pools():
  x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 3, 4, 6)), jnp.float32)
  np.testing.assert_allclose(L.global_avg_pool(x), np.asarray(x).mean((1, 2)), rtol=1e-6)
  np.testing.assert_allclose(L.global_max_pool(x, keepdims=True), np.asarray(x).max((1, 2),
                                                                                   keepdims=True))
  np.testing.assert_allclose(L.channel_max_pool(x, 3),
                             np.asarray(x).reshape(2, 3, 4, 2, 3).max(-1))
  with pytest.raises(ValueError, match='do not split into groups'):
    L.channel_max_pool(x, 4)


def test_unpool_puts_maxima_back():
  x = jnp.asarray([[1, 5, 2, 0], [3, 4, 8, 1], [0, 2, 1, 1], [7, 1, 3, 9]], jnp.float32)[None, ..., None]
  pooled, indices = L.max_pool_with_indices(x, 2, strides=2)
  np.testing.assert_array_equal(pooled[0, ..., 0], [[5, 8], [7, 9]])
  np.testing.assert_array_equal(indices[0, ..., 0], [[1, 6], [12, 15]])
  restored = L.max_unpool(pooled, indices, (4, 4))[0, ..., 0]
  want = np.zeros((4, 4))
  want[0, 1], want[1, 2], want[3, 0], want[3, 3] = 5, 8, 7, 9
  np.testing.assert_array_equal(restored, want)
  with pytest.raises(ValueError, match='same shape'):
    L.max_unpool(pooled, indices[:, :1], (4, 4))


@pytest.mark.slow
def test_gradients_of_custom_pooling_code():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.uniform(0.5, 2.0, (2, 6, 6, 2)), jnp.float32)

  def unpool_roundtrip(v):
    pooled, indices = L.max_pool_with_indices(v, 2, strides=2)
    return L.max_unpool(pooled * 2.0, indices, (6, 6))

  def stochastic_train(v):
    return L.stochastic_pool(v, 3, strides=2, padding='SAME', rng=jax.random.key(3), train=True)

  def stochastic_eval(v):
    return L.stochastic_pool(v, 3, strides=2, padding='SAME')

  for fn in (unpool_roundtrip, stochastic_train, stochastic_eval,
             lambda v: L.lp_pool(v, 2, strides=2)):
    check_grads(fn, (x,), order=1, modes=('rev',), atol=5e-2, rtol=5e-2)
  # Unpooling routes each gradient to exactly the arg-max of its window.
  grad = jax.grad(lambda v: unpool_roundtrip(v).sum())(x)
  assert int((np.asarray(grad) != 0).sum()) == 2 * 3 * 3 * 2
  np.testing.assert_allclose(np.asarray(grad).sum(), 2.0 * 2 * 3 * 3 * 2)
  # lp_pool is differentiable at an all-zero window.
  assert np.all(np.isfinite(jax.grad(lambda v: L.lp_pool(v, 2).sum())(jnp.zeros((1, 3, 3, 1)))))
