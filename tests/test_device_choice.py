"""A CPU launch trains on every device or on fewer, whichever its train step was timed fastest on:
searched once per machine and step, kept in the tuning file, skipped where a run is too short to
pay for it, and never where the user set the device count."""

import json
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_jax import host
from cnn_jax.layers import tuning
from cnn_jax.train import checkpoint, device_choice, loop, parallel
from experiments import base
from tests.test_train import digits_config

EXAMPLE = (8, 8, 1)


@pytest.fixture
def path(tmp_path, monkeypatch):
  """A tuning file of the test's own, read afresh."""
  path = tmp_path / 'tuning.json'
  monkeypatch.setenv('CNN_JAX_TUNING_FILE', str(path))
  monkeypatch.setattr(tuning, '_loaded', {})
  return path


def _config():
  config = base.get_config()
  config.batch_size = 8
  return config


def _make_step(mesh):
  """A least-squares step of a linear model: what a train step is to the search."""

  def step(state, batch):
    x = batch['image'].reshape(batch['image'].shape[0], -1)
    loss, grad = jax.value_and_grad(lambda w: jnp.mean(jnp.square(x @ w)))(state['w'])
    return {'w': state['w'] - 0.01 * grad}, {'loss': loss}

  return jax.jit(step, donate_argnums=0, out_shardings=(parallel.replicated(mesh),) * 2)


def _init():
  return {'w': jnp.ones((np.prod(EXAMPLE), 4))}


def _choose(steps=10**9):
  return device_choice.choose(_config(), parallel.make_mesh(), _make_step, _init, EXAMPLE, (), 10,
                              steps)


def _entry(path):
  entries = json.load(open(path, encoding='utf-8'))[tuning.machine()]
  return entries[device_choice.key(_config(), EXAMPLE, (), 10)]


def test_the_counts_searched_halve_through_divisors():
  assert device_choice.counts(1) == [1]
  assert device_choice.counts(2) == [2, 1]
  assert device_choice.counts(4) == [4, 2, 1]
  assert device_choice.counts(6) == [6, 3, 1]
  assert device_choice.counts(12) == [12, 6, 3, 1]


def test_the_search_keeps_the_fastest_count_and_its_compiled_step(path):
  assert jax.device_count() == 4
  mesh, step = _choose()
  entry = _entry(path)
  ms = {int(count): seconds for count, seconds in entry['ms'].items()}
  timed = sorted(ms, reverse=True)  # the file sorts its keys
  # All the devices first, then halving while the smaller count was faster.
  assert timed == device_choice.counts(4)[:len(timed)] and len(timed) >= 2
  for before, previous, count in zip(timed, timed[1:], timed[2:]):
    assert ms[previous] < ms[before], (count, ms)
  assert timed[-1] == 1 or ms[timed[-1]] >= ms[timed[-2]]
  assert entry['devices'] == mesh.size == min(ms, key=ms.get)
  assert list(mesh.devices.flat) == jax.devices()[:mesh.size]
  # The run's own state and batch on that mesh reuse the program compiled while timing.
  compiled = step._cache_size()  # pylint: disable=protected-access
  state = jax.jit(_init, out_shardings=parallel.replicated(mesh))()
  batch = jax.device_put({'image': np.ones((8, *EXAMPLE), np.float32),
                          'label': np.zeros(8, np.int32)}, parallel.batch_sharded(mesh))
  _, logs = step(state, batch)
  assert np.isfinite(logs['loss']) and step._cache_size() == compiled  # pylint: disable=protected-access


def test_a_later_launch_reads_the_choice_and_times_nothing(path, monkeypatch):
  _choose()
  chosen = _entry(path)['devices']
  monkeypatch.setattr(tuning, '_loaded', {})  # a new process reads the file
  monkeypatch.setattr(device_choice, '_Trial', lambda *a: pytest.fail('timed again'))
  mesh, step = _choose()
  assert mesh.size == chosen and step is None


def test_a_choice_this_launch_cannot_make_is_timed_again(path):
  path.write_text(json.dumps({tuning.machine(): {
      device_choice.key(_config(), EXAMPLE, (), 10): {'devices': 3, 'ms': {}}}}))
  mesh, step = _choose()
  assert step is not None and mesh.size in (4, 2, 1) and _entry(path)['devices'] == mesh.size


def test_a_run_too_short_to_pay_for_the_search_keeps_every_device(path, monkeypatch):
  trials, trial = [], device_choice._Trial  # pylint: disable=protected-access
  monkeypatch.setattr(device_choice, '_Trial', lambda *a: trials.append(a[0]) or trial(*a))
  mesh, step = _choose(steps=1)
  assert mesh.size == 4 and step is not None and len(trials) == 1
  assert not path.exists()  # nothing stored: a longer run of the same step still searches


def test_the_key_is_the_step_not_its_schedule():
  config = _config()
  reference = device_choice.key(config, EXAMPLE, (), 10)
  for field, value in (('optim.lr', 0.5), ('seed', 3), ('num_epochs', 1.0),
                       ('data.augment.ops', ('random_crop',))):
    changed = _config()
    changed.update_from_flattened_dict({field: value})
    assert device_choice.key(changed, EXAMPLE, (), 10) == reference, field
  for field, value in (('batch_size', 16), ('compute_dtype', 'bfloat16'),
                       ('model.name', 'lenet5'), ('parallel.mode', 'pmap'),
                       ('data.augment.ops', ('mixup',))):
    changed = _config()
    changed.update_from_flattened_dict({field: value})
    assert device_choice.key(changed, EXAMPLE, (), 10) != reference, field
  assert device_choice.key(config, (16, 16, 1), (), 10) != reference
  assert device_choice.key(config, EXAMPLE, (), 2) != reference


def test_the_choice_applies_where_tuning_is_on_and_the_launch_set_the_devices(path, monkeypatch):
  config = _config()
  assert not device_choice.applies(config)  # the suite set the device count itself
  monkeypatch.setattr(host, '_devices_from_launch', True)
  assert device_choice.applies(config)
  config.tune_convolutions = False
  assert not device_choice.applies(config)
  config.tune_convolutions = True
  monkeypatch.setenv('CNN_JAX_TUNING_FILE', '')
  assert not device_choice.applies(config)


@pytest.mark.parametrize('user_flags', ['', '--xla_force_host_platform_device_count=3'])
def test_the_launch_marks_a_device_count_it_set(monkeypatch, user_flags):
  monkeypatch.setattr(host, '_devices_from_launch', False)
  monkeypatch.setattr(host, 'keep_freed_memory', lambda: False)
  monkeypatch.setenv('XLA_FLAGS', user_flags)
  host.configure(_config())
  assert host.devices_from_launch() == (not user_flags)


@pytest.mark.slow
@pytest.mark.parametrize('mode', ['jit', 'pmap'])
def test_a_launch_trains_and_resumes_on_the_devices_it_chose(path, data_dir, tmp_path,
                                                              monkeypatch, caplog, mode):
  monkeypatch.setattr(host, '_devices_from_launch', True)
  monkeypatch.setattr(tuning, 'PAYBACK', 0)  # this short run tunes and searches as a long one
  workdir = str(tmp_path / 'run')
  caplog.set_level(logging.INFO)
  final = loop.train_and_evaluate(
      digits_config(data_dir, num_steps=3, **{'parallel.mode': mode}), workdir)
  assert final['last']['test']['count'] == 400
  config = digits_config(data_dir, **{'parallel.mode': mode})
  chosen = json.load(open(path, encoding='utf-8'))[tuning.machine()][device_choice.key(
      config, EXAMPLE, (), 10)]['devices']
  tail = ' (of 4)' if chosen < 4 else ''
  assert f'Devices: {chosen} x cpu (cpu){tail} over 1 process(es)' in caplog.text
  # Resumed: the choice read back, the checkpoint restored onto its mesh.
  monkeypatch.setattr(device_choice, '_Trial', lambda *a: pytest.fail('timed again'))
  caplog.clear()
  final = loop.train_and_evaluate(
      digits_config(data_dir, num_steps=6, **{'parallel.mode': mode}), workdir)
  assert f'Training on {chosen} of 4 devices: the train step timed fastest' in caplog.text
  assert checkpoint.manager(workdir, read_only=True).latest_step() == 6
  assert final['last']['test']['count'] == 400
