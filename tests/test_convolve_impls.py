"""Every form of `convolve` computes the native convolution: values and gradients, in 1-D, 2-D
and 3-D, with strides, dilation, any padding (cropping too), depthwise and grouped kernels."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_jax import layers as L
from cnn_jax import models
from cnn_jax.layers import convolve as convolve_module
from cnn_jax.layers.convolve import convolve

# (input shape, kernel shape, strides, padding, dilation, groups, the form 'matmul' takes)
CASES = [
    ((2, 9, 3), (3, 3, 4), (1,), ((1, 1),), (1,), 1, 'patches'),
    ((2, 11, 10, 3), (3, 3, 3, 5), (2, 1), ((1, 2), (0, 0)), (1, 2), 1, 'patches'),
    ((2, 8, 8, 4), (1, 1, 4, 6), (2, 2), ((1, 1), (0, 1)), (1, 1), 1, 'dense'),
    ((1, 6, 7, 5, 2), (2, 3, 2, 2, 3), (1, 2, 1), ((0, 1), (1, 1), (-1, 0)), (2, 1, 1), 1,
     'patches'),
    ((2, 9, 9, 6), (3, 3, 1, 6), (2, 2), ((1, 1), (1, 1)), (1, 1), 6, 'shifts'),
    ((2, 10, 5), (5, 1, 5), (1,), ((4, 0),), (2,), 5, 'shifts'),  # causal, dilated depthwise
    ((2, 7, 7, 4), (3, 3, 2, 6), (1, 1), ((1, 1), (1, 1)), (1, 1), 2, 'xla'),  # grouped
]


@pytest.mark.parametrize('shape,kernel_shape,strides,padding,dilation,groups,expected', CASES)
def test_matmul_forms_equal_the_native_convolution(shape, kernel_shape, strides, padding,
                                                   dilation, groups, expected):
  assert convolve_module.form('matmul', kernel_shape, groups) == expected
  rng = np.random.default_rng(len(shape) + sum(kernel_shape))
  x = jnp.asarray(rng.standard_normal(shape), jnp.float32)
  kernel = jnp.asarray(rng.standard_normal(kernel_shape), jnp.float32)

  def run(impl):
    def loss(x, kernel):
      y = convolve(x, kernel, strides=strides, padding=padding, kernel_dilation=dilation,
                   feature_group_count=groups, impl=impl)
      return jnp.sum(jnp.sin(y)), y
    (_, y), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(x, kernel)
    return y, grads

  (y_ref, (dx_ref, dk_ref)), (y, (dx, dk)) = run('xla'), run('matmul')
  assert y.shape == y_ref.shape
  for got, want in ((y, y_ref), (dx, dx_ref), (dk, dk_ref)):
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)


def test_auto_is_matmul_on_cpu_and_xla_elsewhere_and_transposes_stay_native():
  assert convolve_module.form('auto', (3, 3, 4, 8), platform='cpu') == 'patches'
  assert convolve_module.form('auto', (3, 3, 4, 8), platform='gpu') == 'xla'
  assert convolve_module.form('auto', (3, 3, 1, 8), 8, platform='tpu') == 'xla'
  assert convolve_module.form('matmul', (3, 3, 4, 8), input_dilation=(2, 2)) == 'xla'
  with pytest.raises(ValueError, match="conv_impl='fast': expected one of"):
    convolve_module.form('fast', (3, 3, 4, 8))


def _primitives(fn, *args) -> set[str]:
  return {eqn.primitive.name for eqn in jax.make_jaxpr(fn)(*args).jaxpr.eqns}


def test_the_form_is_chosen_per_layer_or_for_a_block():
  x = jnp.ones((1, 8, 8, 3))
  conv = L.Conv(4, 3)
  variables = conv.init(jax.random.key(0), x)
  with convolve_module.use('xla'):
    assert 'conv_general_dilated' in _primitives(conv.apply, variables, x)
  with convolve_module.use('matmul'):
    assert 'conv_general_dilated' not in _primitives(conv.apply, variables, x)
    per_layer = L.Conv(4, 3, conv_impl='xla')
    assert 'conv_general_dilated' in _primitives(per_layer.apply, variables, x)
  with pytest.raises(ValueError, match='expected one of'):
    with convolve_module.use('cudnn'):
      pass


def test_a_whole_model_trains_the_same_in_every_form():
  model = models.get_model('mobilenet_v1', num_classes=5, width_multiplier=0.25)
  x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 32, 32, 3)), jnp.float32)
  variables = model.init(jax.random.key(0), x)

  def grads(impl):
    def loss(params):
      # Inference mode: training BatchNorm over a 1x1 map of two examples would amplify rounding.
      return jnp.sum(model.apply({**variables, 'params': params}, x, train=False) ** 2)
    with convolve_module.use(impl):
      return jax.jit(jax.grad(loss))(variables['params'])

  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
                         grads('matmul'), grads('xla'))
