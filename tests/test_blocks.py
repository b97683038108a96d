"""Blocks, regularisers, upsampling and kernel constraints."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.test_util import check_grads

from cnn_jax import arithmetic
from cnn_jax import layers as L


def _x(shape, seed=0):
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def _params(variables):
  return sum(p.size for p in jax.tree_util.tree_leaves(variables['params']))


def test_residual_block_starts_as_identity_and_projects_when_needed():
  x = _x((2, 8, 8, 4))
  block = L.ResidualBlock(4)
  variables = block.init(jax.random.key(0), x)
  np.testing.assert_allclose(block.apply(variables, x), nn.relu(x), atol=1e-6)  # zero-init last BN
  assert 'projection' not in variables['params']
  strided = L.ResidualBlock(8, strides=2)
  variables = strided.init(jax.random.key(0), x)
  assert strided.apply(variables, x).shape == (2, 4, 4, 8)
  assert variables['params']['projection']['kernel'].shape == (1, 1, 4, 8)
  plain = L.ResidualBlock(4, shortcut='none')
  out = plain.apply(plain.init(jax.random.key(0), x), x)
  assert not np.allclose(out, nn.relu(x))  # the plain twin has no identity path
  # 3x3 convs 4->8 and 8->8, two BatchNorms (scale + bias of 8), the 1x1 projection and its BN.
  assert _params(variables) == 3 * 3 * 4 * 8 + 3 * 3 * 8 * 8 + 2 * 2 * 8 + 4 * 8 + 2 * 8


@pytest.mark.slow
def test_blocks_work_in_1d_and_3d_and_with_any_conv():
  assert L.ResidualBlock(6, strides=2).init_with_output(jax.random.key(0), _x((2, 16, 3)))[0].shape == (
      2, 8, 6)
  assert L.BottleneckBlock(2).init_with_output(jax.random.key(0), _x((1, 4, 4, 4, 3)))[0].shape == (
      1, 4, 4, 4, 8)
  separable = L.ResidualBlock(8, conv=L.SeparableConv)
  variables = separable.init(jax.random.key(0), _x((1, 6, 6, 8)))
  assert variables['params']['SeparableConv_0']['depthwise']['kernel'].shape == (3, 3, 1, 8)


@pytest.mark.parametrize('stride_in_3x3,first_output', [(True, 8), (False, 4)])
def test_bottleneck_stride_placement(stride_in_3x3, first_output):
  summary = arithmetic.summarize(L.BottleneckBlock(4, strides=2, stride_in_3x3=stride_in_3x3),
                                 (1, 8, 8, 16), print_fn=None)
  convs = [row for row in summary.layers if row.kind == 'Conv']
  assert convs[0].output_shape[1] == first_output  # v1.5 strides in the 3x3, v1 in the first 1x1
  assert convs[2].output_shape == (1, 4, 4, 16) and convs[3].name == 'projection'


def test_preact_block_adds_unactivated():
  x = _x((2, 6, 6, 4))
  block = L.PreActResidualBlock(4)
  variables = block.init(jax.random.key(0), x)
  out = block.apply(variables, x)
  assert np.any(np.asarray(out) < 0)  # no final activation
  assert L.PreActResidualBlock(8, strides=2).init_with_output(jax.random.key(0), x)[0].shape == (
      2, 3, 3, 8)


def test_highway_gate_carries_or_transforms():
  x = _x((2, 6, 6, 3))
  carry = L.HighwayBlock(gate_bias=-50.0)
  np.testing.assert_allclose(carry.apply(carry.init(jax.random.key(0), x), x), x, atol=1e-5)
  transform = L.HighwayBlock(gate_bias=50.0)
  variables = transform.init(jax.random.key(0), x)
  h = nn.relu(nn.BatchNorm(use_running_average=True).apply(
      {'params': variables['params']['BatchNorm_0'], 'batch_stats': variables['batch_stats']['BatchNorm_0']},
      L.Conv(3, 3, use_bias=False).apply({'params': variables['params']['transform']}, x)))
  np.testing.assert_allclose(transform.apply(variables, x), h, atol=1e-5)


@pytest.mark.slow
def test_inception_dense_transition_shapes_and_params():
  x = _x((1, 8, 8, 6))
  inception = L.InceptionModule(4, 3, 5, 2, 3, 2)
  out, variables = inception.init_with_output(jax.random.key(0), x)
  assert out.shape == (1, 8, 8, 4 + 5 + 3 + 2)
  expected = (6 * 4 + 4) + (6 * 3 + 3) + (9 * 3 * 5 + 5) + (6 * 2 + 2) + (25 * 2 * 3 + 3) + (6 * 2 + 2)
  assert _params(variables) == expected
  dense = L.DenseBlock(3, growth_rate=4)
  assert dense.init_with_output(jax.random.key(0), x)[0].shape == (1, 8, 8, 6 + 3 * 4)
  transition = L.Transition()
  assert transition.init_with_output(jax.random.key(0), _x((1, 8, 8, 18)))[0].shape == (1, 4, 4, 9)


@pytest.mark.slow
def test_squeeze_excite_and_mbconv():
  x = _x((2, 5, 5, 16))
  se = L.SqueezeExcite(4)
  variables = se.init(jax.random.key(0), x)
  zeroed = jax.tree_util.tree_map(jnp.zeros_like, variables)
  np.testing.assert_allclose(se.apply(zeroed, x), x * 0.5, atol=1e-6)  # gate sigmoid(0)
  mb = L.MBConv(16, expand_ratio=6, kernel_size=3)
  variables = mb.init(jax.random.key(0), x)
  # expand 16*96 + BN, depthwise 9*96 + BN, SE 96*4+4 + 4*96+96, project 96*16 + BN.
  assert _params(variables) == 1536 + 192 + 864 + 192 + 388 + 480 + 1536 + 32
  out = mb.apply(variables, x)
  assert out.shape == x.shape
  assert L.MBConv(24, strides=2).init_with_output(jax.random.key(0), x)[0].shape == (2, 3, 3, 24)


@pytest.mark.slow
def test_stochastic_depth():
  branch = jnp.ones((400, 3, 3, 2))
  layer = L.StochasticDepth(0.25)
  np.testing.assert_array_equal(layer.apply({}, branch, deterministic=True), branch)
  out = np.asarray(layer.apply({}, branch, deterministic=False,
                              rngs={'stochastic_depth': jax.random.key(0)}))
  per_example = out.reshape(400, -1)
  assert np.all((per_example == 0).all(1) | np.isclose(per_example, 1 / 0.75).all(1))
  assert abs((per_example[:, 0] == 0).mean() - 0.25) < 0.07
  check_grads(lambda b: layer.apply({}, b, deterministic=False,
                                    rngs={'stochastic_depth': jax.random.key(1)}),
              (_x((8, 2, 2, 2)),), order=1, modes=('rev',))
  block = L.ResidualBlock(2, drop_rate=0.5)
  x = _x((64, 4, 4, 2))
  variables = block.init(jax.random.key(0), x)
  variables = {'params': jax.tree_util.tree_map(lambda p: p + 0.3, variables['params']),
               'batch_stats': variables['batch_stats']}
  out, _ = block.apply(variables, x, True, rngs={'stochastic_depth': jax.random.key(2)},
                       mutable=['batch_stats'])
  dropped = np.isclose(np.asarray(out), np.asarray(nn.relu(x)), atol=1e-6).reshape(64, -1).all(1)
  assert 10 < dropped.sum() < 54  # about half of the examples skipped the branch
  with pytest.raises(ValueError, match=r'in \[0, 1\)'):
    L.StochasticDepth(1.0).apply({}, branch, deterministic=False,
                              rngs={'stochastic_depth': jax.random.key(0)})


def test_spatial_dropout_drops_whole_maps():
  x = jnp.ones((8, 5, 5, 16))
  out = np.asarray(L.SpatialDropout(0.5).apply({}, x, deterministic=False,
                                               rngs={'dropout': jax.random.key(0)}))
  per_map = out.transpose(0, 3, 1, 2).reshape(8 * 16, -1)
  assert np.all((per_map == 0).all(1) | (per_map == 2.0).all(1))
  assert 0 < (per_map == 0).all(1).sum() < 8 * 16


def _bilinear_reference(x, scale):
  """PyTorch's align_corners=False rule: src = (dst + 0.5)/scale - 0.5, clamped to the edges."""
  n = x.shape[0]
  out = np.zeros(n * scale)
  for i in range(n * scale):
    src = min(max((i + 0.5) / scale - 0.5, 0.0), n - 1)
    lo = int(np.floor(src))
    hi = min(lo + 1, n - 1)
    out[i] = x[lo] * (1 - (src - lo)) + x[hi] * (src - lo)
  return out


def test_upsample():
  x = _x((1, 4, 5, 2))
  nearest = L.Upsample(2).apply({}, x)
  np.testing.assert_array_equal(nearest, np.repeat(np.repeat(np.asarray(x), 2, 1), 2, 2))
  line = _x((1, 6, 1))
  bilinear = L.Upsample(3, 'bilinear').apply({}, line)
  np.testing.assert_allclose(bilinear[0, :, 0], _bilinear_reference(np.asarray(line[0, :, 0]), 3),
                             atol=1e-5)
  ramp = jnp.arange(8.0).reshape(1, 8, 1)
  bicubic = np.asarray(L.Upsample(2, 'bicubic').apply({}, ramp))[0, :, 0]
  np.testing.assert_allclose(bicubic[4:-4], (np.arange(16) + 0.5)[4:-4] / 2 - 0.5, atol=1e-5)
  assert L.Upsample((1, 2, 3), 'bilinear').apply({}, _x((1, 2, 2, 2, 1))).shape == (1, 2, 4, 6, 1)
  with pytest.raises(ValueError, match='expected one of'):
    L.Upsample(2, 'area').apply({}, x)


def test_kernel_constraints():
  kernel = _x((3, 3, 4, 5)) * 3
  norms = lambda k: np.sqrt((np.asarray(k) ** 2).sum((0, 1, 2)))
  clipped = L.max_norm(kernel, 2.0)
  assert np.all(norms(clipped) <= 2.0 + 1e-5)
  small = kernel / norms(kernel).max()
  np.testing.assert_allclose(L.max_norm(small, 2.0), small, rtol=1e-6)
  np.testing.assert_allclose(norms(L.unit_norm(kernel)), 1.0, rtol=1e-5)

  params = {'conv': {'kernel': kernel, 'bias': jnp.full((5,), 10.0)}}
  tx = optax.chain(optax.sgd(1.0), L.constrain_kernels(functools.partial(L.max_norm, max_value=1.0)))
  grads = jax.tree_util.tree_map(jnp.ones_like, params)
  updates, _ = tx.update(grads, tx.init(params), params)
  new = optax.apply_updates(params, updates)
  assert np.all(norms(new['conv']['kernel']) <= 1.0 + 1e-5)
  np.testing.assert_allclose(new['conv']['bias'], 9.0)  # biases are not constrained
  with pytest.raises(ValueError, match='needs the parameters'):
    tx.update(grads, tx.init(params))
