"""Each convolution's way chosen by timing on this machine (`cnn_jax.layers.tuning`): timed once,
kept in the file, read back without timing, and computing XLA's convolution whatever it chose."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_jax import conv_form
from cnn_jax.layers import convolve as convolve_module
from cnn_jax.layers import cpu_rules, tuning
from cnn_jax.layers.convolve import convolve
from cnn_jax.train import parallel

PADDING = ((1, 1), (1, 1))


def _gradients(x, kernel, impl='mixed'):
  """Gradients of a 3x3 convolution, traced afresh (a new jitted function each call)."""
  def loss(x, kernel):
    y = convolve(x, kernel, strides=(1, 1), padding=PADDING, kernel_dilation=(1, 1), impl=impl)
    return jnp.sum(jnp.sin(y))
  return jax.jit(jax.grad(loss, argnums=(0, 1)))(x, kernel)


@pytest.fixture(name='inputs')
def fixture_inputs():
  rng = np.random.default_rng(0)
  return (jnp.asarray(rng.standard_normal((4, 6, 6, 24)), jnp.float32),
          jnp.asarray(rng.standard_normal((3, 3, 24, 20)) / 15, jnp.float32))


@pytest.fixture(name='path')
def fixture_path(tmp_path, monkeypatch):
  monkeypatch.setattr(tuning, '_loaded', {})  # this process's reading of files
  return str(tmp_path / 'tuning.json')


def test_a_convolution_is_timed_once_then_read_back(inputs, path, monkeypatch):
  x, kernel = inputs
  with conv_form.tuning(path):
    tuned = _gradients(x, kernel)
  for ours, xla in zip(tuned, _gradients(x, kernel, 'xla')):
    np.testing.assert_allclose(ours, xla, rtol=1e-4, atol=1e-4)
  entries = json.load(open(path, encoding='utf-8'))
  key = tuning.signature(x.shape, kernel.shape, (1, 1), PADDING, (1, 1), jnp.float32)
  entry = entries[tuning.machine()][key]
  ways = cpu_rules.plans('mixed', PADDING)
  assert set(entry['ms']) == set(ways) and len(ways) == 5  # padded: the tap products too
  assert entry['choice'] == min(entry['ms'], key=entry['ms'].get)

  def no_timing(*args):
    raise AssertionError(f'timed again: {args}')

  monkeypatch.setattr(tuning, '_time_each', no_timing)
  monkeypatch.setattr(tuning, '_loaded', {})  # as a later launch: from the file
  with conv_form.tuning(path):
    _gradients(x, kernel)


def test_a_single_channels_ways_are_its_rule_and_the_plain_planes(path):
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.standard_normal((4, 6, 6, 1)), jnp.float32)
  kernel = jnp.asarray(rng.standard_normal((3, 3, 1, 8)) / 3, jnp.float32)
  with conv_form.tuning(path):
    tuned = _gradients(x, kernel)
  for ours, xla in zip(tuned, _gradients(x, kernel, 'xla')):
    np.testing.assert_allclose(ours, xla, rtol=1e-4, atol=1e-4)
  key = tuning.signature(x.shape, kernel.shape, (1, 1), PADDING, (1, 1), jnp.float32)
  entry = json.load(open(path, encoding='utf-8'))[tuning.machine()][key]
  assert set(entry['ms']) == {'mixed_planes', 'patches'}


@pytest.mark.parametrize('way,native', [('patches', False), ('mixed/direct/taps', True),
                                        ('mixed/taps/patches', False)])
def test_the_choice_in_the_file_is_the_way_computed(inputs, path, way, native):
  x, kernel = inputs
  key = tuning.signature(x.shape, kernel.shape, (1, 1), PADDING, (1, 1), jnp.float32)
  with open(path, 'w', encoding='utf-8') as f:
    json.dump({tuning.machine(): {key: {'choice': way, 'ms': {}}}}, f)

  def forward(x, kernel):
    return convolve(x, kernel, strides=(1, 1), padding=PADDING, kernel_dilation=(1, 1),
                    impl='mixed')

  with conv_form.tuning(path):
    primitives = _primitives(jax.make_jaxpr(forward)(x, kernel).jaxpr)
    tuned = _gradients(x, kernel)
  assert ('conv_general_dilated' in primitives) == native
  for ours, xla in zip(tuned, _gradients(x, kernel, 'xla')):
    np.testing.assert_allclose(ours, xla, rtol=1e-4, atol=1e-4)


def _primitives(jaxpr) -> set[str]:
  """Every primitive of ``jaxpr``, inside custom rules and calls too."""
  found = set()
  for eqn in jaxpr.eqns:
    found.add(eqn.primitive.name)
    for value in eqn.params.values():
      inner = getattr(value, 'jaxpr', value)
      if hasattr(inner, 'eqns'):
        found |= _primitives(inner)
  return found


def test_a_depthwise_convolution_timed_on_every_device_at_once(path, monkeypatch):
  """The key holds one device's share of a batch split over 4 devices, and each way is timed on
  the 4 devices together, each on such a share; a depthwise kernel's ways are its rule and the
  plain shifted sum."""
  mesh = parallel.make_mesh()
  x = jax.device_put(jnp.ones((8, 5, 5, 6)), parallel.batch_sharded(mesh))
  kernel = jnp.ones((3, 3, 1, 6)) / 9
  timed = []
  seconds = tuning._seconds  # pylint: disable=protected-access
  monkeypatch.setattr(tuning, '_seconds', lambda program, arguments, fastest: (
      timed.append(arguments), seconds(program, arguments, fastest))[1])

  def loss(x, kernel):
    with conv_form.split_batch(mesh.size):
      y = convolve(x, kernel, strides=(1, 1), padding=PADDING, kernel_dilation=(1, 1),
                   feature_group_count=6, impl='mixed')
    return jnp.sum(y ** 2)

  with conv_form.tuning(path, mesh.size):
    jax.jit(jax.grad(loss, argnums=(0, 1)))(x, kernel)
  entries = json.load(open(path, encoding='utf-8'))[tuning.machine()]
  key = tuning.signature((2, 5, 5, 6), kernel.shape, (1, 1), PADDING, (1, 1), jnp.float32, 4)
  assert set(entries) == {key} and set(entries[key]['ms']) == {'mixed_shifts', 'shifts'}
  assert len(timed) == 2
  for timed_x, timed_kernel in timed:
    assert timed_x.shape == (8, 5, 5, 6) and timed_kernel.shape == kernel.shape
    assert timed_x.sharding.shard_shape(timed_x.shape) == (2, 5, 5, 6)
    assert len(timed_x.sharding.device_set) == 4


def test_no_timing_without_a_file_or_outside_mixed(inputs, path, monkeypatch):
  x, kernel = inputs
  monkeypatch.setattr(tuning, 'choose', lambda *a: pytest.fail('tuned'))
  _gradients(x, kernel)  # no file: the thresholds choose
  with conv_form.tuning(path):
    _gradients(x, kernel, 'matmul')
    _gradients(x, kernel, 'xla')
  assert convolve_module.form('mixed', kernel.shape) == 'mixed'


@pytest.mark.parametrize('tune,per_device', [(True, False), (True, True), (False, False)])
def test_the_train_step_tunes_where_the_config_says(tmp_path, monkeypatch, tune, per_device):
  from tests.test_convolve_impls import lower_wide_train_step  # pylint: disable=g-import-not-at-top
  from experiments import base  # pylint: disable=g-import-not-at-top
  path = tmp_path / 'tuning.json'
  monkeypatch.setenv('CNN_JAX_TUNING_FILE', str(path))
  monkeypatch.setattr(tuning, '_loaded', {})
  config = base.get_config()
  config.tune_convolutions = tune
  config.parallel.mode = 'pmap' if per_device else 'jit'
  lower_wide_train_step(config)
  assert path.exists() == tune
  if tune:  # each device's share, 2 of the 8 examples, timed on the 4 devices at once, and
    # without the gradient of the images
    keys = list(json.load(open(path, encoding='utf-8'))[tuning.machine()])
    assert keys and all(key.startswith('x [2, 6, 6, 20]')
                        and key.endswith(' on 4 devices, no input gradient') for key in keys), keys


@pytest.mark.parametrize('argnums,taken', [((0, 1), (True, True)), (1, (False, True)),
                                           (0, (True, False))])
def test_the_probe_tells_which_gradients_are_taken(inputs, argnums, taken):
  x, kernel = inputs
  seen = []

  def loss(x, kernel):
    seen.append(tuning.differentiated(x, kernel))
    return jnp.sum(x) + jnp.sum(kernel)

  jax.jit(jax.grad(loss, argnums=argnums))(x, kernel)
  jax.jit(loss)(x, kernel)  # no gradient traced: as if both were taken
  assert seen == [taken, (True, True)]


def test_a_first_layer_is_timed_without_its_input_gradient(inputs, path, monkeypatch):
  """Where the step takes no gradient of x (the images), each way is timed computing the
  kernel's gradient alone, and the entry says so."""
  x, kernel = inputs
  outputs = []
  seconds = tuning._seconds  # pylint: disable=protected-access

  def timed(program, arguments, fastest):
    outputs.append([g.shape for g in program(*arguments)])
    return seconds(program, arguments, fastest)

  monkeypatch.setattr(tuning, '_seconds', timed)
  loss = lambda kernel: jnp.sum(jnp.sin(convolve(
      x, kernel, strides=(1, 1), padding=PADDING, kernel_dilation=(1, 1), impl='mixed')))
  with conv_form.tuning(path):
    tuned = jax.jit(jax.grad(loss))(kernel)
  assert outputs == [[(1, *kernel.shape)]] * len(cpu_rules.plans('mixed', PADDING))
  key = tuning.signature(x.shape, kernel.shape, (1, 1), PADDING, (1, 1), jnp.float32,
                         gradients=(False, True))
  assert key.endswith(', no input gradient')
  assert list(json.load(open(path, encoding='utf-8'))[tuning.machine()]) == [key]
  np.testing.assert_allclose(tuned, _gradients(x, kernel, 'xla')[1], rtol=1e-4, atol=1e-4)


def _two_layer_gradients(x, kernels):
  """Gradients of two 3x3 convolutions in a row, traced afresh."""
  def loss(x, kernels):
    for kernel in kernels:
      x = jnp.sin(convolve(x, kernel, strides=(1, 1), padding=PADDING, kernel_dilation=(1, 1),
                           impl='mixed'))
    return jnp.sum(x)
  return jax.jit(jax.grad(loss, argnums=(0, 1)))(x, kernels)


def test_a_budget_times_while_it_would_pay(inputs, path, caplog):
  """With no steps to win anything back, only the first convolution met is timed; the second is
  computed by the thresholds and left out of the file. With steps to spare, the first is read
  back (its time counting towards the step's) and the second timed."""
  x, kernel = inputs
  kernels = (kernel, kernel[:, :, :20, :16] * 1.1)
  xla = _two_layer_gradients(x, kernels)  # under impl='mixed' and no file: the thresholds
  caplog.set_level('INFO')
  short = tuning.Budget(steps=0, step_macs=1)
  with conv_form.tuning(path, budget=short):
    tuned = _two_layer_gradients(x, kernels)
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4),
                         tuned, xla)
  entries = json.load(open(path, encoding='utf-8'))[tuning.machine()]
  first = tuning.signature(x.shape, kernel.shape, (1, 1), PADDING, (1, 1), jnp.float32)
  assert list(entries) == [first]
  assert short.spent > 0 and short.seconds == pytest.approx(
      entries[first]['ms'][entries[first]['choice']] / 1e3, abs=1e-6)  # the file keeps µs
  assert 'too short to repay timing the rest' in caplog.text

  long = tuning.Budget(steps=10**9, step_macs=1)
  with conv_form.tuning(path, budget=long):
    _two_layer_gradients(x, kernels)
  entries = json.load(open(path, encoding='utf-8'))[tuning.machine()]
  assert len(entries) == 2
  assert long.seconds == pytest.approx(
      sum(entry['ms'][entry['choice']] for entry in entries.values()) / 1e3, abs=2e-6)
  first_macs, second_macs = 4 * 6 * 6 * 3 * 3 * 24 * 20, 4 * 6 * 6 * 3 * 3 * 20 * 16
  assert short.macs == first_macs and long.macs == first_macs + second_macs
  assert long.spent > 0  # the second timed


@pytest.mark.parametrize('met,step_macs,spent,allowed', [
    ((0.01, 100), 100, 0.1, True), ((0.01, 100), 100, 0.11, False),  # the step is the one met
    ((0.01, 100), 400, 0.4, True), ((0.01, 100), 400, 0.41, False),  # a quarter of the step met
    ((0.01, 100), 50, 0.1, True), ((0.01, 100), 50, 0.11, False)])  # never less than those met
def test_a_budget_allows_a_tenth_of_the_steps_predicted(met, step_macs, spent, allowed):
  budget = tuning.Budget(steps=100, step_macs=step_macs)
  assert budget.allows()  # nothing spent yet
  budget.met(*met)
  budget.spent = spent
  assert budget.allows() == allowed


@pytest.mark.slow
def test_a_short_run_tunes_no_more_than_it_wins_back(data_dir, tmp_path, monkeypatch, caplog):
  """A 3-step run of the default model, whose four convolutions the CPU rules take, times the
  first and no other; a long one (no payback asked) times the other three, reading the first
  back."""
  from cnn_jax.train import loop  # pylint: disable=g-import-not-at-top
  from tests.test_train import digits_config  # pylint: disable=g-import-not-at-top
  path = tmp_path / 'tuning.json'
  monkeypatch.setenv('CNN_JAX_TUNING_FILE', str(path))
  monkeypatch.setattr(tuning, '_loaded', {})
  caplog.set_level('INFO')
  config = lambda: digits_config(data_dir, num_steps=3, **{'model.kwargs.widths': (32, 64)})
  final = loop.train_and_evaluate(config(), str(tmp_path / 'short'))
  assert final['last']['test']['count'] == 400
  short = json.load(open(path, encoding='utf-8'))[tuning.machine()]
  assert len(short) == 1 and next(iter(short)).startswith('x [8, 8, 8, 1]'), short
  assert 'too short to repay timing the rest' in caplog.text
  monkeypatch.setattr(tuning, 'PAYBACK', 0)
  loop.train_and_evaluate(config(), str(tmp_path / 'long'))
  long = json.load(open(path, encoding='utf-8'))[tuning.machine()]
  assert len(long) == 4 and long.items() >= short.items(), long
