"""Every convolution layer against the plain-numpy references, over random configurations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cnn_jax import arithmetic
from cnn_jax import layers as L
from tests import reference

SETTINGS = settings(max_examples=25, deadline=None)


@st.composite
def conv_configs(draw, paddings=('VALID', 'SAME', 'HALF', 'FULL', 'int', 'pairs')):
  rank = draw(st.integers(1, 3))
  kernel = tuple(draw(st.integers(1, 3)) for _ in range(rank))
  strides = tuple(draw(st.integers(1, 3)) for _ in range(rank))
  dilation = tuple(draw(st.integers(1, 2)) for _ in range(rank))
  mode = draw(st.sampled_from(paddings + (('CAUSAL',) if rank == 1 else ())))
  if mode == 'int':
    padding = draw(st.integers(0, 2))
  elif mode == 'pairs':
    padding = [(draw(st.integers(0, 2)), draw(st.integers(0, 2))) for _ in range(rank)]
  else:
    padding = mode
  groups = draw(st.sampled_from([1, 2]))
  # Each spatial size is at least the dilated kernel, so every configuration has an output.
  size = tuple(draw(st.integers(d * (k - 1) + 1, d * (k - 1) + 5)) for k, d in zip(kernel, dilation))
  return dict(rank=rank, kernel=kernel, strides=strides, dilation=dilation, padding=padding,
              groups=groups, size=size)


def _random(shape, seed):
  return np.random.default_rng(seed).standard_normal(shape)


@pytest.mark.slow
@SETTINGS
@given(conv_configs(), st.integers(0, 2**16))
def test_conv_matches_reference(cfg, seed):
  channels, features = 2 * cfg['groups'], 2 * cfg['groups']
  x = _random((2, *cfg['size'], channels), seed)
  w = _random((*cfg['kernel'], channels // cfg['groups'], features), seed + 1)
  layer = L.Conv(features, cfg['kernel'], strides=cfg['strides'], padding=cfg['padding'],
                 kernel_dilation=cfg['dilation'], feature_group_count=cfg['groups'], use_bias=False)
  got = layer.apply({'params': {'kernel': jnp.asarray(w, jnp.float32)}}, jnp.asarray(x, jnp.float32))
  pads = reference.explicit_padding(cfg['padding'], cfg['size'], cfg['kernel'], cfg['strides'],
                                    cfg['dilation'])
  want = reference.conv(x, w, cfg['strides'], pads, cfg['dilation'], cfg['groups'])
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
  assert got.shape[1:-1] == arithmetic.conv_output_shape(cfg['size'], cfg['kernel'], cfg['strides'],
                                                         cfg['padding'], cfg['dilation'])


def test_flip_kernel_is_the_textbook_convolution():
  x, w = _random(7, 0), _random(3, 1)
  layer = L.Conv(1, 3, padding='FULL', flip_kernel=True, use_bias=False)
  got = layer.apply({'params': {'kernel': jnp.asarray(w, jnp.float32)[:, None, None]}},
                    jnp.asarray(x, jnp.float32)[None, :, None])
  np.testing.assert_allclose(got[0, :, 0], reference.true_convolution_1d(x, w), rtol=1e-5, atol=1e-5)
  plain = L.Conv(1, 3, padding='FULL', use_bias=False).apply(
      {'params': {'kernel': jnp.asarray(w, jnp.float32)[:, None, None]}},
      jnp.asarray(x, jnp.float32)[None, :, None])
  assert not np.allclose(plain, got)  # cross-correlation differs for an asymmetric kernel


@pytest.mark.slow
@SETTINGS
@given(conv_configs(paddings=('VALID', 'SAME', 'HALF', 'FULL', 'int', 'pairs')), st.integers(0, 2**16))
def test_conv_transpose_is_the_adjoint_and_matches_reference(cfg, seed):
  channels, features = 3, 2
  size, kernel, strides, dilation = cfg['size'], cfg['kernel'], cfg['strides'], cfg['dilation']
  geometry = arithmetic.conv_geometry(size, kernel, strides, cfg['padding'], dilation)
  if isinstance(cfg['padding'], str) and cfg['padding'] == 'SAME':
    size = tuple(o * s for o, s in zip(geometry.output_size, strides))  # what 'SAME' transposes to
    geometry = arithmetic.conv_geometry(size, kernel, strides, 'SAME', dilation)
  output_padding = geometry.unused  # always < stride: recovers exactly the forward input size
  x = jnp.asarray(_random((2, *size, channels), seed), jnp.float32)
  y = jnp.asarray(_random((2, *geometry.output_size, features), seed + 1), jnp.float32)
  w = jnp.asarray(_random((*kernel, channels, features), seed + 2), jnp.float32)
  params = {'params': {'kernel': w}}
  common = dict(strides=strides, padding=cfg['padding'], kernel_dilation=dilation, use_bias=False)
  forward = L.Conv(features, kernel, **common).apply(params, x)
  backward = L.ConvTranspose(channels, kernel, output_padding=output_padding, **common).apply(
      params, y)
  assert backward.shape == x.shape
  np.testing.assert_allclose(jnp.vdot(forward, y), jnp.vdot(x, backward), rtol=1e-4, atol=1e-3)
  want = reference.conv_transpose(np.asarray(y), np.asarray(w), strides, geometry.padding, dilation,
                                  output_padding)
  np.testing.assert_allclose(backward, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('i,k,s,p,d,op', [(4, 3, 2, 1, 1, 1), (5, 4, 3, 0, 1, 2), (3, 3, 1, 0, 2, 0),
                                          (6, 2, 2, 0, 1, 0)])
def test_conv_transpose_output_size_is_pytorchs(i, k, s, p, d, op):
  out = L.ConvTranspose(1, k, strides=s, padding=p, kernel_dilation=d, output_padding=op).init_with_output(
      jax.random.key(0), jnp.zeros((1, i, 1)))[0]
  assert out.shape[1] == (i - 1) * s + d * (k - 1) + 1 - 2 * p + op
  assert out.shape[1:2] == arithmetic.conv_transpose_output_shape((i,), k, s, p, d, op)


def test_conv_transpose_same_doubles_the_size():
  out = L.ConvTranspose(4, 3, strides=2, padding='SAME').init_with_output(
      jax.random.key(0), jnp.zeros((1, 5, 6, 2)))[0]
  assert out.shape == (1, 10, 12, 4)


def test_depthwise_conv_matches_grouped_reference():
  x = _random((2, 6, 6, 3), 0)
  w = _random((3, 3, 1, 6), 1)
  got = L.DepthwiseConv(3, depth_multiplier=2, strides=2, use_bias=False, padding='VALID').apply(
      {'params': {'kernel': jnp.asarray(w, jnp.float32)}}, jnp.asarray(x, jnp.float32))
  np.testing.assert_allclose(got, reference.conv(x, w, (2, 2), [(0, 0)] * 2, (1, 1), groups=3),
                             rtol=1e-4, atol=1e-4)


def test_separable_conv_is_depthwise_then_pointwise():
  x = jnp.asarray(_random((1, 7, 7, 4), 0), jnp.float32)
  layer = L.SeparableConv(5, 3, depth_multiplier=2)
  variables = layer.init(jax.random.key(0), x)
  p = variables['params']
  depthwise = reference.conv(np.asarray(x), np.asarray(p['depthwise']['kernel']), (1, 1),
                             [(1, 1)] * 2, (1, 1), groups=4)
  want = reference.conv(depthwise, np.asarray(p['pointwise']['kernel']), (1, 1), [(0, 0)] * 2,
                        (1, 1)) + np.asarray(p['pointwise']['bias'])
  np.testing.assert_allclose(layer.apply(variables, x), want, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_spatially_separable_conv_equals_the_outer_product_kernel():
  x = jnp.asarray(_random((2, 8, 9, 1), 0), jnp.float32)
  column, row = _random(3, 1), _random(5, 2)
  params = {'axis0': {'kernel': jnp.asarray(column, jnp.float32).reshape(3, 1, 1, 1)},
            'axis1': {'kernel': jnp.asarray(row, jnp.float32).reshape(1, 5, 1, 1)}}
  for padding, strides in (('SAME', 1), ('VALID', 2), ([(2, 0), (1, 3)], (2, 1))):
    got = L.SpatiallySeparableConv(1, (3, 5), strides=strides, padding=padding, use_bias=False).apply(
        {'params': params}, x)
    full = L.Conv(1, (3, 5), strides=strides, padding=padding, use_bias=False).apply(
        {'params': {'kernel': jnp.asarray(np.outer(column, row), jnp.float32)[..., None, None]}}, x)
    np.testing.assert_allclose(got, full, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_conv_as_toeplitz_matrix():
  """004: a convolution is a (doubly block) Toeplitz matrix; its transpose is the transposed conv."""
  kernel = jnp.asarray(_random((3, 3, 1, 1), 0), jnp.float32)
  matrix = L.conv_matrix(kernel, (4, 4))
  assert matrix.shape == (4, 16)
  # Toeplitz structure: each row holds the same kernel taps, shifted.
  np.testing.assert_allclose(matrix[0].reshape(4, 4)[:3, :3], kernel[..., 0, 0], rtol=1e-6)
  np.testing.assert_allclose(matrix[1].reshape(4, 4)[:3, 1:], kernel[..., 0, 0], rtol=1e-6)
  np.testing.assert_allclose(matrix[0, 4 * 1 + 1], matrix[3, 4 * 2 + 2], rtol=1e-6)  # diagonal-constant
  x = jnp.asarray(_random((1, 4, 4, 1), 1), jnp.float32)
  conv = L.Conv(1, 3, padding='VALID', use_bias=False)
  np.testing.assert_allclose(matrix @ np.asarray(x).ravel(),
                             np.asarray(conv.apply({'params': {'kernel': kernel}}, x)).ravel(),
                             rtol=1e-5, atol=1e-5)
  y = jnp.asarray(_random((1, 2, 2, 1), 2), jnp.float32)
  transposed = L.ConvTranspose(1, 3, padding='VALID', use_bias=False).apply(
      {'params': {'kernel': kernel}}, y)
  np.testing.assert_allclose(matrix.T @ np.asarray(y).ravel(), np.asarray(transposed).ravel(),
                             rtol=1e-5, atol=1e-5)
  strided = L.conv_matrix(kernel, (5, 5), strides=2, padding='SAME')
  assert strided.shape == (9, 25)


@pytest.mark.slow
def test_causal_stack_never_looks_ahead():
  """A causal dilated stack: output t has zero gradient w.r.t. every input after t."""
  import flax.linen as nn

  class Causal(nn.Module):
    @nn.compact
    def __call__(self, x):
      for dilation in (1, 2, 4):
        x = nn.tanh(L.Conv(3, 2, padding='CAUSAL', kernel_dilation=dilation)(x))
      return x

  x = jnp.asarray(_random((1, 16, 2), 0), jnp.float32)
  model = Causal()
  variables = model.init(jax.random.key(0), x)
  jac = jax.jacobian(lambda v: model.apply(variables, v)[0, :, 0])(x)[:, 0, :, :]  # [t_out, t_in, C]
  influence = np.abs(np.asarray(jac)).sum(-1)
  assert np.all(np.triu(influence, k=1) == 0)  # nothing after t
  assert np.all(np.diag(influence) > 0)  # but t itself
  assert influence[15, 15 - 7] > 0 and influence[15, 15 - 8] == 0  # receptive field 1+1+2+4 = 8


def test_bad_arguments_say_what_to_do():
  with pytest.raises(ValueError, match='divisible by feature_group_count'):
    L.Conv(4, 3, feature_group_count=3).init(jax.random.key(0), jnp.zeros((1, 5, 5, 4)))
  with pytest.raises(ValueError, match='No output is possible'):
    L.Conv(4, 7, padding='VALID').init(jax.random.key(0), jnp.zeros((1, 5, 5, 1)))
  with pytest.raises(ValueError, match="'CAUSAL' is defined for 1-D"):
    L.Conv(4, 3, padding='CAUSAL').init(jax.random.key(0), jnp.zeros((1, 5, 5, 1)))
  with pytest.raises(ValueError, match='Add a batch axis'):
    L.Conv(4, (3, 3)).init(jax.random.key(0), jnp.zeros((5, 5)))
  with pytest.raises(ValueError, match='output_padding=2'):
    L.ConvTranspose(4, 3, strides=2, output_padding=2).init(jax.random.key(0), jnp.zeros((1, 5, 1)))
  with pytest.raises(ValueError, match='not a padding mode'):
    arithmetic.padding_pairs('MIRROR', (5,), (3,))
