"""Every form of `convolve` computes the native convolution: values and gradients, in 1-D, 2-D
and 3-D, with strides, dilation, any padding (cropping too), depthwise and grouped kernels; the
'mixed' form's own backward pass too."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from cnn_jax import conv_form
from cnn_jax import layers as L
from cnn_jax import models
from cnn_jax.layers import convolve as convolve_module
from cnn_jax.layers import cpu_rules
from cnn_jax.layers.convolve import convolve
from cnn_jax.train import parallel
from cnn_jax.train.steps import AXIS

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
    # One input channel, whose patches are planes taps first: strided, dilated, cropped; causal.
    ((2, 12, 11, 1), (5, 3, 1, 6), (2, 1), ((2, 1), (-1, 2)), (1, 2), 1, 'patches'),
    ((3, 16, 1), (4, 1, 8), (1,), ((3, 0),), (1,), 1, 'patches'),
]


TAP_CASES = [
    ((2, 4, 4, 256), (3, 3, 256, 128), (1, 1), ((1, 1), (1, 1)), (1, 1), 1, 'mixed'),
    ((2, 8, 7, 256), (3, 3, 256, 64), (2, 2), ((0, 1), (1, 1)), (1, 1), 1, 'mixed'),
    ((2, 5, 6, 128), (3, 2, 128, 128), (1, 1), ((2, 1), (-1, 1)), (2, 1), 1, 'mixed'),
]


# What 'mixed' runs its own way. 2-D float32 kernels with more than 16 channels in or out: unit
# strides (input gradient as a flipped convolution), with dilation and cropping, and strided
# (input gradient one stride phase at a time, else through the patches); the kernel gradient's
# first-dim taps as shifts of dy (unit stride there) or as x's patches.
MIXED_CASES = [
    ((2, 9, 8, 20), (3, 3, 20, 24), (1, 1), ((1, 1), (1, 1)), (1, 1), 1, 'mixed'),
    ((2, 10, 9, 17), (3, 2, 17, 5), (1, 1), ((2, 0), (-1, 1)), (2, 1), 1, 'mixed'),
    ((2, 9, 10, 20), (3, 3, 20, 24), (1, 2), ((0, 1), (1, 0)), (1, 1), 1, 'mixed'),
    ((2, 7, 9, 20), (1, 3, 20, 24), (1, 1), ((1, 2), (1, 1)), (1, 1), 1, 'mixed'),
    # A dilated 'SAME' layer: its input gradient a dilated convolution of dy.
    ((2, 9, 8, 20), (3, 3, 20, 24), (1, 1), ((2, 2), (1, 1)), (2, 1), 1, 'mixed'),
    ((2, 11, 10, 3), (5, 3, 3, 32), (2, 3), ((2, 1), (1, 1)), (1, 1), 1, 'mixed'),
    ((2, 11, 10, 1), (3, 3, 1, 32), (2, 2), ((1, 1), (1, 1)), (1, 1), 1, 'mixed'),
    # Strided input gradients one stride phase at a time: ResNet's 'SAME' downsampling, a 3x4
    # window at strides (2, 3) (phases of 1 and 2 taps), and a padding that crops dy's phases.
    ((2, 10, 12, 20), (3, 3, 20, 24), (2, 2), ((0, 1), (0, 1)), (1, 1), 1, 'mixed'),
    ((2, 9, 12, 20), (3, 4, 20, 24), (2, 3), ((1, 1), (1, 1)), (1, 1), 1, 'mixed'),
    ((2, 8, 8, 20), (3, 3, 20, 24), (2, 2), ((3, 2), (2, 3)), (1, 1), 1, 'mixed'),
    # Small maps with many channels, forward (the first's input and kernel gradients too) one
    # product per tap over the inputs it meets: ResNet's 4x4 layer; strided; a dilated, cropping
    # window.
    *TAP_CASES,
    # LeNet-5's C5: its input gradient, a 5x5 window over a 1x1 map, goes through the patches.
    ((2, 5, 5, 16), (5, 5, 16, 24), (1, 1), ((0, 0), (0, 0)), (1, 1), 1, 'mixed'),
    # A single input channel to few features (LeNet-5's C1), the planes kept for the kernel
    # gradient: unpadded; strided, dilated and cropped.
    ((2, 12, 12, 1), (5, 5, 1, 6), (1, 1), ((0, 0), (0, 0)), (1, 1), 1, 'mixed_planes'),
    ((2, 12, 11, 1), (5, 3, 1, 6), (2, 1), ((2, 1), (-1, 2)), (1, 2), 1, 'mixed_planes'),
    # Depthwise kernels, whose kernel gradient is one pass over every tap and input gradient one
    # stride phase at a time: unit strides with cropping, strided, causal and dilated in 1-D.
    ((2, 9, 8, 6), (3, 3, 1, 6), (1, 1), ((1, 2), (-1, 1)), (1, 2), 6, 'mixed_shifts'),
    ((2, 9, 9, 6), (3, 3, 1, 6), (2, 2), ((1, 1), (1, 1)), (1, 1), 6, 'mixed_shifts'),
    # ... strided 3 with a 2-tap window (a phase no tap reaches), cropped, dilated.
    ((2, 10, 11, 6), (3, 2, 1, 6), (2, 3), ((2, 0), (-1, 1)), (2, 1), 6, 'mixed_shifts'),
    ((2, 10, 5), (5, 1, 5), (1,), ((4, 0),), (2,), 5, 'mixed_shifts'),
]


@pytest.mark.parametrize('shape,kernel_shape,strides,padding,dilation,groups,expected,impl',
                         [(*case, 'matmul') for case in CASES] +
                         [(*case, 'mixed') for case in MIXED_CASES])
def test_every_form_equals_the_native_convolution(shape, kernel_shape, strides, padding,
                                                  dilation, groups, expected, impl):
  assert convolve_module.form(impl, kernel_shape, groups) == expected
  rng = np.random.default_rng(len(shape) + sum(kernel_shape))
  x = jnp.asarray(rng.standard_normal(shape), jnp.float32)
  # Scaled by the fan-in, as layers initialise it: outputs of order one, whatever the channels.
  kernel = jnp.asarray(rng.standard_normal(kernel_shape) / np.sqrt(np.prod(kernel_shape[:-1])),
                       jnp.float32)

  def run(impl):
    def loss(x, kernel):
      y = convolve(x, kernel, strides=strides, padding=padding, kernel_dilation=dilation,
                   feature_group_count=groups, impl=impl)
      return jnp.sum(jnp.sin(y)), y
    (_, y), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(x, kernel)
    return y, grads

  (y_ref, (dx_ref, dk_ref)), (y, (dx, dk)) = run('xla'), run(impl)
  assert y.shape == y_ref.shape
  for got, want in ((y, y_ref), (dx, dx_ref), (dk, dk_ref)):
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize('dtype', [jnp.bfloat16, jnp.float16])
def test_narrow_floats_are_computed_in_float32_by_the_cpu_rules(dtype):
  # XLA's CPU backend multiplies them in float32 anyway; converted first, the rules take them.
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((2, 8, 8, 32)), dtype)
  kernel = jnp.asarray(rng.standard_normal((3, 3, 32, 32)) / np.sqrt(288), dtype)
  conv = functools.partial(convolve, strides=(1, 1), padding=((1, 1), (1, 1)),
                           kernel_dilation=(1, 1))

  def run(impl, x, kernel):
    loss = lambda x, kernel: jnp.sum(jnp.sin(conv(x, kernel, impl=impl).astype(jnp.float32)))
    return conv(x, kernel, impl=impl), jax.grad(loss, argnums=(0, 1))(x, kernel)

  assert convolve_module.form('mixed', kernel.shape, dtype=dtype) == 'patches'
  assert 'custom_vjp_call' in str(jax.make_jaxpr(functools.partial(conv, impl='mixed'))(x, kernel))
  # The native form is left as the user wrote it.
  assert 'custom_vjp_call' not in str(
      jax.make_jaxpr(functools.partial(conv, impl='xla'))(x, kernel))
  y, (dx, dk) = run('mixed', x, kernel)
  y_wide, (dx_wide, dk_wide) = run('mixed', x.astype(jnp.float32), kernel.astype(jnp.float32))
  assert (y.dtype, dx.dtype, dk.dtype) == (dtype,) * 3
  np.testing.assert_array_equal(np.asarray(y, np.float32),
                                np.asarray(y_wide.astype(dtype), np.float32))
  for got, want in ((dx, dx_wide), (dk, dk_wide)):  # within the rounding of the narrow cotangent
    np.testing.assert_allclose(np.asarray(got, np.float32), want, rtol=0,
                               atol=2**-6 * float(jnp.abs(want).max()))


def test_auto_is_mixed_on_cpu_and_xla_elsewhere_and_transposes_stay_native():
  assert convolve_module.form('auto', (3, 3, 4, 32), platform='cpu') == 'mixed'
  # What YNNPACK does not take stays im2col: few channels, 1-D and 3-D kernels.
  assert convolve_module.form('auto', (3, 3, 4, 8), platform='cpu') == 'patches'
  assert convolve_module.form('mixed', (3, 32, 32)) == 'patches'
  assert convolve_module.form('mixed', (3, 3, 3, 32, 32)) == 'patches'
  assert convolve_module.form('mixed', (1, 1, 32, 32)) == 'dense'
  # A single input channel: 2-D to few features has a rule of its own, 1-D stays the planes'.
  assert convolve_module.form('mixed', (5, 5, 1, 6)) == 'mixed_planes'
  assert convolve_module.form('mixed', (5, 1, 6)) == 'patches'
  # ... nor a window or an output larger than the input.
  assert convolve_module.form('mixed', (5, 5, 16, 120), sizes=((5, 5), (1, 1))) == 'mixed'
  assert convolve_module.form('mixed', (5, 5, 16, 120), sizes=((4, 4), (1, 1))) == 'patches'
  assert convolve_module.form('mixed', (3, 3, 32, 32), sizes=((2, 2), (4, 4))) == 'patches'
  # A transposed convolution's sizes are those of its dilated input (2 -> 4 here, output 2).
  y = convolve(jnp.ones((1, 2, 2, 20)), jnp.ones((3, 3, 20, 20)), strides=(1, 1),
               padding=((0, 0), (0, 0)), kernel_dilation=(1, 1), input_dilation=(3, 3))
  assert y.shape == (1, 2, 2, 20)
  assert convolve_module.form('auto', (3, 3, 4, 8), platform='gpu') == 'xla'
  assert convolve_module.form('auto', (3, 3, 1, 8), 8, platform='tpu') == 'xla'
  assert convolve_module.form('matmul', (3, 3, 4, 8), input_dilation=(2, 2)) == 'xla'
  with pytest.raises(ValueError, match="conv_impl='fast': expected one of"):
    convolve_module.form('fast', (3, 3, 4, 8))


@pytest.mark.parametrize('shape,kernel_shape,strides,padding,dilation', [
    case[:5] for case in TAP_CASES])
def test_small_maps_skip_the_padding_and_large_ones_keep_the_direct_kernels(
    shape, kernel_shape, strides, padding, dilation):
  x, kernel = jnp.ones(shape), jnp.ones(kernel_shape)
  direct = lambda x, kernel: cpu_rules.direct(x, kernel, strides, padding, dilation, None)
  assert 'conv_general_dilated' not in _primitives(direct, x, kernel)
  # The same layer on a map 8x larger meets little enough padding for YNNPACK, as do few channels.
  large = jnp.ones((shape[0], *(8 * n for n in shape[1:-1]), shape[-1]))
  assert 'conv_general_dilated' in _primitives(direct, large, kernel)
  assert 'conv_general_dilated' in _primitives(direct, x[..., :16], kernel[..., :16, :])


def _kernel_gradient(impl, padding, devices=1):
  """A unit-stride 2-D convolution's jitted kernel gradient, in form ``impl``, its batch split
  over ``devices`` (`conv_form.split_batch`, as the train step says it)."""
  def loss(x, kernel):
    with conv_form.split_batch(devices):
      y = convolve(x, kernel, strides=(1, 1), padding=padding, kernel_dilation=(1, 1), impl=impl)
    return jnp.sum(jnp.sin(y))
  return jax.jit(jax.grad(loss, argnums=1))


def test_the_kernel_gradient_is_summed_over_chunks_of_each_devices_batch(monkeypatch):
  """'mixed' builds a kernel gradient's patches a chunk of the batch at a time, each device on the
  examples it holds: the gradient is XLA's, and no device gathers the others' examples for it."""
  monkeypatch.setattr(cpu_rules, 'CHUNK_BYTES', 1)  # one example per chunk
  mesh = parallel.make_mesh()
  rng = np.random.default_rng(0)
  kernel = jnp.asarray(rng.standard_normal((3, 3, 20, 24)), jnp.float32)

  grad = functools.partial(_kernel_gradient, padding=((1, 1), (0, 1)), devices=mesh.size)

  # 3 examples on each of 4 devices; 6 examples do not split 4 ways: one loop over all of them.
  for batch, sharding in ((12, parallel.batch_sharded(mesh)), (6, parallel.replicated(mesh))):
    x = jax.device_put(rng.standard_normal((batch, 6, 5, 20)).astype(np.float32), sharding)
    np.testing.assert_allclose(grad('mixed')(x, kernel), grad('xla')(x, kernel), rtol=2e-5,
                               atol=2e-4)
    program = grad('mixed').lower(x, kernel).compile().as_text()
    assert 'while' in program and 'all-gather' not in program

  # Under shard_map (the 'pmap' mode) each device holds only its own 4 examples: it loops over
  # them all, one per chunk, rather than splitting them again by the device count.
  def per_device(impl):
    return jax.jit(jax.shard_map(_kernel_gradient(impl, ((1, 1), (0, 1))), mesh=mesh,
                                 in_specs=(P(AXIS), P()), out_specs=P(AXIS), check_vma=False))

  x = jax.device_put(rng.standard_normal((16, 6, 5, 20)).astype(np.float32),
                     parallel.batch_sharded(mesh))
  np.testing.assert_allclose(per_device('mixed')(x, kernel), per_device('xla')(x, kernel),
                             rtol=2e-5, atol=2e-4)
  assert '"known_trip_count":{"n":"4"}' in per_device('mixed').lower(x, kernel).compile().as_text()


def test_a_small_maps_kernel_gradient_is_summed_tap_by_tap_on_each_devices_batch():
  """On a 4x4 map of 256 channels the kernel gradient skips the padding, tap by tap, each device
  on the examples it holds (no loop over chunks, no gather); the wider map keeps the patches."""
  mesh = parallel.make_mesh()
  rng = np.random.default_rng(1)
  kernel = jnp.asarray(rng.standard_normal((3, 3, 256, 128)) / np.sqrt(9 * 256), jnp.float32)

  grad = functools.partial(_kernel_gradient, padding=((1, 1), (1, 1)), devices=mesh.size)

  for size, loops in ((4, False), (8, True)):
    x = jax.device_put(rng.standard_normal((8, size, size, 256)).astype(np.float32),
                       parallel.batch_sharded(mesh))
    np.testing.assert_allclose(grad('mixed')(x, kernel), grad('xla')(x, kernel), rtol=2e-5,
                               atol=2e-4)
    program = grad('mixed').lower(x, kernel).compile().as_text()
    assert ('while' in program) == loops and 'all-gather' not in program

  # Under shard_map (the 'pmap' mode) each device's taps cover only its own examples.
  per_device = lambda impl: jax.jit(jax.shard_map(_kernel_gradient(impl, ((1, 1), (1, 1))),
                                                  mesh=mesh, in_specs=(P(AXIS), P()),
                                                  out_specs=P(AXIS), check_vma=False))
  x = jax.device_put(rng.standard_normal((8, 4, 4, 256)).astype(np.float32),
                     parallel.batch_sharded(mesh))
  np.testing.assert_allclose(per_device('mixed')(x, kernel), per_device('xla')(x, kernel),
                             rtol=2e-5, atol=2e-4)


def test_a_single_channels_kernel_gradient_is_its_planes_times_dy():
  """Autodiff's transpose of the planes' product contracts dy and the planes over both their last
  dims, which XLA's CPU backend runs slowly; the rule's is the planes [taps, positions] times dy
  [positions, features], from the planes of the forward pass."""
  x = jnp.asarray(np.random.default_rng(0).standard_normal((4, 12, 12, 1)), jnp.float32)
  kernel = jnp.ones((5, 5, 1, 6)) / 25

  def kernel_gradient_products(impl):
    loss = lambda kernel: jnp.sum(jnp.sin(convolve(
        x, kernel, strides=(1, 1), padding=((0, 0), (0, 0)), kernel_dilation=(1, 1), impl=impl)))
    program = jax.jit(jax.grad(loss)).lower(kernel).compile().as_text()
    return [line.split(' dot(')[1].split(', metadata')[0] for line in program.splitlines()
            if ' dot(' in line and 'f32[25,6]' in line]

  rule, autodiff = kernel_gradient_products('mixed'), kernel_gradient_products('matmul')
  assert len(rule) == 1 and 'lhs_contracting_dims={1}, rhs_contracting_dims={0}' in rule[0]
  assert len(autodiff) == 1 and 'lhs_contracting_dims={1}, rhs_contracting_dims={1}' in autodiff[0]


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


@pytest.mark.parametrize('name,kwargs,shape', [
    ('mobilenet_v1', {'width_multiplier': 0.25}, (2, 32, 32, 3)),  # 1x1 and depthwise
    ('simple_cnn', {'widths': (32, 64)}, (2, 8, 8, 1)),  # 3x3 with 32 and 64 channels: 'mixed'
])
@pytest.mark.slow
def test_a_whole_model_trains_the_same_in_every_form(name, kwargs, shape):
  model = models.get_model(name, num_classes=5, **kwargs)
  x = jnp.asarray(np.random.default_rng(0).standard_normal(shape), jnp.float32)
  variables = model.init(jax.random.key(0), x)

  def grads(impl):
    def loss(params):
      # Inference mode: training BatchNorm over a 1x1 map of two examples would amplify rounding.
      return jnp.sum(model.apply({**variables, 'params': params}, x, train=False) ** 2)
    with convolve_module.use(impl):
      return jax.jit(jax.grad(loss))(variables['params'])

  want = grads('xla')
  for impl in ('matmul', 'mixed'):
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
                           grads(impl), want)


class _WideConv(nn.Module):
  """Wide enough for 'mixed''s own rule."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    return nn.Dense(3)(L.Conv(24, 3)(x).mean((1, 2)))


@pytest.mark.parametrize('mode,devices', [('jit', 4), ('pmap', 1)])
def test_the_train_step_says_over_how_many_devices_its_batch_is_split(monkeypatch, mode, devices):
  """The device-group count reaches 'mixed' from the train step that knows it: the mesh's size
  for a global program, 1 for a per-device one."""
  from experiments import base  # pylint: disable=g-import-not-at-top
  seen = []
  told = conv_form.batch_groups
  monkeypatch.setattr(conv_form, 'batch_groups', lambda: seen.append(told()) or seen[-1])
  config = base.get_config()
  config.parallel.mode = mode
  lower_wide_train_step(config, before_step=seen.clear)  # the init's forward pass is no step's
  assert seen and set(seen) == {devices}
  assert conv_form.batch_groups() == 1  # outside the step


def lower_wide_train_step(config, before_step=lambda: None) -> None:
  """Lowers ``config``'s train step of `_WideConv` under 'mixed', for a batch of 8 over the 4
  test devices (``before_step`` runs once the state is initialised)."""
  from cnn_jax.train import loop, optim, steps  # pylint: disable=g-import-not-at-top
  mesh = parallel.make_mesh()
  assert mesh.size == 4
  model = _WideConv()
  schedule = optim.learning_rate(config.optim, 1, 1)
  tx = optim.create(config.optim, schedule)
  state = jax.jit(loop.state_initializer(model, tx, (6, 6, 20), config),
                  out_shardings=parallel.replicated(mesh))()
  batch = {'image': jnp.ones((8, 6, 6, 20)), 'label': jnp.zeros((8,), jnp.int32)}
  before_step()
  with convolve_module.use('mixed'):
    steps.make_train_step(model, tx, schedule, config, mesh).lower(state, batch)
