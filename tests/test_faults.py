"""Faults a long job meets, caused for real: signals, kills, damaged files, full disks, misuse.

Each test checks what a user would: the final parameters equal an uninterrupted run's, the run's
record is unchanged, and the message says what happened and what to do.
"""

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_jax.errors import ConfigError
from cnn_jax.train import checkpoint, loop, metrics
from experiments import base
from tests.test_train import REPO, digits_config, final_params


def _command(workdir, data_dir, steps, *extra, widths='(8, 16)'):
  return [sys.executable, '-m', 'cnn_jax.main', f'--workdir={workdir}',
          f'--config.data.data_dir={data_dir}', f'--config.num_steps={steps}',
          f'--config.model.kwargs.widths={widths}', '--config.log_every=10',
          '--config.eval_every=100', '--config.checkpoint.every=100', *extra]


def _run(command, **kwargs) -> subprocess.CompletedProcess:
  return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300, **kwargs)


def wait_for_progress(workdir, process, step):
  """Returns once metrics.jsonl has reached ``step`` (the run is mid-way)."""
  path = os.path.join(workdir, 'metrics.jsonl')
  for _ in range(3000):
    assert process.poll() is None, process.communicate()[1][-3000:]
    if os.path.exists(path) and any(json.loads(l)['step'] >= step for l in open(path)
                                    if l.endswith('\n')):
      return
    time.sleep(0.02)
  raise AssertionError('the run made no progress')


def _assert_same_params(a, b):
  jax.tree_util.tree_map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6),
                         final_params(a), final_params(b))


@pytest.fixture(scope='module')
def reference(tmp_path_factory, data_dir):
  """An uninterrupted 300-step run, the outcome every interrupted one must reproduce."""
  workdir = str(tmp_path_factory.mktemp('faults') / 'straight')
  result = _run(_command(workdir, data_dir, 300))
  assert result.returncode == 0, result.stderr[-3000:]
  return workdir


@pytest.mark.slow
def test_sigterm_and_ctrl_c_save_exit_0_and_the_same_command_resumes_exactly(reference, tmp_path,
                                                                            data_dir):
  workdir = str(tmp_path / 'run')
  command = _command(workdir, data_dir, 300)
  stops = []
  for sent in (signal.SIGTERM, signal.SIGINT):
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    wait_for_progress(workdir, process, 60 if not stops else stops[-1] + 60)
    process.send_signal(sent)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err[-3000:]
    step = int(out.split(f'Stopped by {sent.name} at step ')[1].split('/')[0])
    assert 'Run the same command to resume.' in out and step < 300
    assert checkpoint.manager(workdir, read_only=True).latest_step() == step
    stops.append(step)
  result = _run(command)
  assert result.returncode == 0 and f'at step {stops[-1]}' in result.stderr
  _assert_same_params(workdir, reference)
  assert _train_steps(workdir) == sorted(set(_train_steps(workdir)))  # each step once
  assert _train_steps(workdir)[-1] == 300


@pytest.mark.slow
def test_kill_9_at_any_moment_then_the_same_command_resumes_exactly(reference, tmp_path,
                                                                   data_dir):
  workdir = str(tmp_path / 'run')
  # Saves every 10 steps, so a kill often lands while Orbax is writing one.
  command = _command(workdir, data_dir, 300, '--config.checkpoint.every=10')
  folder = checkpoint.directory(workdir)
  for until in (45, 170):
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    wait_for_progress(workdir, process, until)
    for _ in range(200):  # kill during a save if one shows up within a second
      if glob.glob(os.path.join(folder, '*.orbax-checkpoint-tmp*')):
        break
      time.sleep(0.005)
    process.kill()
    process.wait()
  result = _run(command)
  assert result.returncode == 0, result.stderr[-3000:]
  _assert_same_params(workdir, reference)
  assert _train_steps(workdir) == list(range(10, 301, 10))  # each step once, none missing


def _train_steps(workdir) -> list[int]:
  records = map(json.loads, open(os.path.join(workdir, 'metrics.jsonl')))
  return [r['step'] for r in records if r['split'] == 'train']


@pytest.fixture(scope='module')
def twenty(tmp_path_factory, data_dir):
  """A run saved at steps 10 and 20, and the uninterrupted 30-step run to compare with (a
  constant learning rate: a cosine schedule would depend on the run's length)."""
  root = tmp_path_factory.mktemp('damage')
  config = lambda steps: digits_config(data_dir, num_steps=steps, **{
      'checkpoint.every': 10, 'eval_every': 10, 'optim.schedule': 'constant'})
  loop.train_and_evaluate(config(20), str(root / 'twenty'))
  loop.train_and_evaluate(config(30), str(root / 'thirty'))
  return str(root / 'twenty'), str(root / 'thirty'), config


def _damage(step_dir, kind):
  default = os.path.join(step_dir, 'default')
  sibling = lambda name: os.path.join(os.path.dirname(step_dir), name)
  if kind == 'truncated data':
    for folder, _, files in os.walk(default):
      for name in files:
        if os.path.basename(folder) == 'd':
          path = os.path.join(folder, name)
          with open(path, 'r+b') as f:
            f.truncate(os.path.getsize(path) // 3)
  elif kind == 'deleted _METADATA':
    os.remove(os.path.join(default, '_METADATA'))
  elif kind == 'garbage _METADATA':
    with open(os.path.join(default, '_METADATA'), 'w') as f:
      f.write('{"tree_metadata": [garbage')
  elif kind == 'half-written step':
    partial = sibling('30.orbax-checkpoint-tmp-1700000000')
    shutil.copytree(step_dir, partial)
    shutil.rmtree(os.path.join(partial, 'default', 'ocdbt.process_0'))
  elif kind == 'empty step folder':
    os.makedirs(sibling('30'))


@pytest.mark.slow
@pytest.mark.parametrize('kind', ['truncated data', 'deleted _METADATA', 'garbage _METADATA',
                                  'half-written step', 'empty step folder'])
def test_a_damaged_checkpoint_is_reported_and_the_run_resumes_from_an_intact_one(
    twenty, tmp_path, kind, caplog):
  source, thirty, config = twenty
  workdir = str(tmp_path / 'run')
  shutil.copytree(source, workdir)
  _damage(os.path.join(checkpoint.directory(workdir), '20'), kind)
  loop.train_and_evaluate(config(30), workdir)
  _assert_same_params(workdir, thirty)
  set_aside = glob.glob(os.path.join(checkpoint.directory(workdir), '*.unusable-*'))
  warnings = ' '.join(r.getMessage() for r in caplog.records if r.levelname == 'WARNING')
  if set_aside:  # what could not be read is named, and kept beside the others
    assert os.path.basename(set_aside[0]).split('.')[0] in warnings and 'moved to' in warnings
  if kind == 'truncated data':
    assert set_aside, 'a checkpoint with truncated data must not be resumed from'
  if kind == 'half-written step':
    assert 'a save that never completed' in warnings


def test_non_finite_parameters_are_never_resumed_and_nan_logits_are_never_right(twenty, tmp_path):
  source, thirty, config = twenty
  workdir = str(tmp_path / 'run')
  shutil.copytree(source, workdir)
  mngr = checkpoint.manager(workdir, config(30))
  state = jax.tree_util.tree_map(np.array, mngr.restore(20))
  state['params']['Dense_0']['kernel'][:] = np.nan
  state['step'] = np.asarray(25, np.int32)
  mngr.save(25, args=checkpoint.ocp.args.StandardSave(state))
  mngr.wait_until_finished()
  mngr.close()
  loop.train_and_evaluate(config(30), workdir)
  _assert_same_params(workdir, thirty)  # resumed from 20, not from the NaN step 25
  logits = jnp.asarray([[jnp.nan, jnp.nan], [1.0, 0.0]])
  np.testing.assert_array_equal(metrics.correct_top_k(logits, jnp.asarray([0, 0]), 1), [0, 1])


def test_divergence_on_a_save_step_writes_nothing_and_names_the_last_finite_checkpoint(twenty,
                                                                                    tmp_path):
  source, _, config = twenty
  workdir = str(tmp_path / 'run')
  shutil.copytree(source, workdir)
  diverging = config(40)
  diverging.optim.lr, diverging.optim.schedule = 1e30, 'constant'
  with pytest.raises(FloatingPointError, match='The last checkpoint \\(step 20, all finite\\)'):
    loop.train_and_evaluate(diverging, workdir)
  assert checkpoint.manager(workdir, read_only=True).all_steps() == [10, 20]


def _unshare_works() -> bool:
  probe = subprocess.run(['unshare', '--user', '--map-root-user', '--mount', 'true'],
                         capture_output=True)
  return probe.returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(not _unshare_works(), reason='needs user namespaces (unshare) to mount a '
                    'small filesystem without privileges')
def test_a_full_disk_stops_the_run_at_once_with_one_line_and_the_process_exits(tmp_path, data_dir):
  """A 1.4 MB tmpfs holds the first checkpoint (~0.9 MB at the default widths) but not the second."""
  mount, workdir = str(tmp_path / 'small'), str(tmp_path / 'small' / 'run')
  os.makedirs(mount)
  command = ' '.join(f"'{c}'" for c in _command(workdir, data_dir, 400, widths='(32, 64)'))
  script = (f'mount -t tmpfs -o size=1400k tmpfs {mount} && {command}; echo "rc=$?"; '
            f'mount -o remount,ro {mount} && {command}; echo "rc=$?"')
  result = subprocess.run(['unshare', '--user', '--map-root-user', '--mount', 'sh', '-c', script],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
  full, read_only = result.stdout.split('rc=')[1:3]
  errors = [l for l in result.stderr.splitlines() if l.startswith('Error: ')]
  # A full disk fails a run (exit code 1); a read-only workdir is refused at launch (2).
  assert full.startswith('1') and read_only.startswith('2'), result.stderr[-3000:]
  # Whichever write meets the full disk first (the save of step 200 or a log line after it).
  assert 'failed (No space left on device' in errors[0], errors
  assert 'the last complete checkpoint is step 100' in errors[0]
  assert 'step 300/400' not in result.stderr  # it stopped at the failed save, not at the next
  assert 'is not writable' in errors[1]


@pytest.mark.slow
def test_a_changed_config_never_rewrites_the_record(tmp_path, data_dir):
  workdir = str(tmp_path / 'run')
  assert _run(_command(workdir, data_dir, 20)).returncode == 0
  record = open(os.path.join(workdir, 'config.json')).read()

  for change in ({'widths': '(4, 8)'}, {'extra': '--config.batch_size=128'},
                 {'extra': '--config.optim.name=adam'}):
    extra = [change['extra']] if 'extra' in change else []
    result = _run(_command(workdir, data_dir, 30, *extra, widths=change.get('widths', '(8, 16)')))
    assert result.returncode == 2
    lines = [l for l in result.stderr.splitlines() if l.startswith('Error: ')]
    assert len(lines) == 1 and 'Traceback' not in result.stderr, result.stderr[-2000:]
    assert 'cannot continue' in lines[0] and '--config.resume=restart' in lines[0]
    assert open(os.path.join(workdir, 'config.json')).read() == record
  assert checkpoint.manager(workdir, read_only=True).latest_step() == 20

  allowed = _run(_command(workdir, data_dir, 30, '--config.optim.lr=0.01'))
  assert allowed.returncode == 0 and 'optim.lr: 0.05 -> 0.01' in allowed.stderr
  assert open(os.path.join(workdir, 'config.json')).read() == record
  assert json.load(open(os.path.join(workdir, 'config.20.json')))['optim']['lr'] == 0.01

  finished = _run(_command(workdir, data_dir, 10))
  assert finished.returncode == 0 and 'nothing left to train' in finished.stderr

  restart = _run(_command(workdir, data_dir, 10, '--config.resume=restart', widths='(4, 8)'))
  assert restart.returncode == 0, restart.stderr[-2000:]
  archived = glob.glob(os.path.join(workdir, 'archive-*'))
  assert len(archived) == 1
  assert sorted(os.listdir(os.path.join(archived[0], 'checkpoints')))[-1] == '30'
  assert json.load(open(os.path.join(workdir, 'config.json')))['model']['kwargs']['widths'] == [4, 8]


@pytest.mark.slow
def test_one_run_per_workdir_and_a_killed_run_leaves_no_stale_lock(tmp_path, data_dir):
  workdir = str(tmp_path / 'run')
  first = subprocess.Popen(_command(workdir, data_dir, 3000), cwd=REPO,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  try:
    wait_for_progress(workdir, first, 10)
    second = _run(_command(workdir, data_dir, 3000, '--config.optim.lr=0.01'))
    assert second.returncode == 2
    assert 'is in use by a running training (host' in second.stderr
    assert f'pid {first.pid})' in second.stderr
  finally:
    first.kill()
    first.wait()
  third = _run(_command(workdir, data_dir, 20))  # the killed run's lock went with it
  assert third.returncode == 0, third.stderr[-2000:]


@pytest.mark.parametrize('field,value,message', [
    ('optim.lr', -0.1, 'config.optim.lr=-0.1: expected a value > 0'),
    ('num_epochs', 0.0, 'expected a value > 0 (or set config.num_steps > 0)'),
    ('batch_size', 0, 'config.batch_size=0: expected a value >= 1'),
    ('checkpoint.every', 0, 'config.checkpoint.every=0: expected a value >= 1'),
    ('eval_every', -1, 'config.eval_every=-1'),
    ('ema_decay', 1.0, 'expected a value >= 0 and < 1'),
    ('resume', 'always', "config.resume='always'"),
    ('conv_impl', 'fast',
     "config.conv_impl='fast': expected one of ('auto', 'xla', 'matmul', 'mixed')"),
    ('compute_dtype', 'float8', "config.compute_dtype='float8': expected one of"),
])
def test_every_numeric_field_is_checked_before_any_work(field, value, message, tmp_path):
  config = base.get_config()
  section, _, name = field.rpartition('.')
  (config[section] if section else config)[name] = value
  with pytest.raises(ConfigError, match=message.replace('(', '\\(').replace(')', '\\)')):
    loop.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not os.path.exists(tmp_path / 'run')


@pytest.mark.slow
def test_a_user_error_prints_one_line_and_a_model_far_from_its_input_size_is_named(
    tmp_path, data_dir, caplog):
  result = _run(_command(str(tmp_path / 'a'), data_dir, 5, '--config.optim.lr=-1'))
  assert result.returncode == 2 and 'Traceback' not in result.stderr
  assert 'Error: config.optim.lr=-1.0: expected a value > 0.' in result.stderr
  verbose = _run(_command(str(tmp_path / 'a'), data_dir, 5, '--config.optim.lr=-1',
                          '--verbosity=1'))
  assert 'Traceback' in verbose.stderr
  config = digits_config(data_dir)
  config.model.name, config.model.kwargs = 'resnet18', {}
  source = loop.sources.load('digits', 'train', data_dir)
  loop.check_task(config, loop.build_model(config, 10), source, (8, 8, 1))
  assert 'resnet18 is designed for inputs of 224x224; digits examples are 8x8' in caplog.text


@pytest.mark.slow
def test_two_jobs_preparing_the_same_dataset_both_succeed(tmp_path):
  data_dir = str(tmp_path / 'data')
  code = ('import sys; from cnn_jax.data import sources; '
          f'print(len(sources.load("mnist1d", "train", {data_dir!r})))')
  jobs = [subprocess.Popen([sys.executable, '-c', code], cwd=REPO, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True) for _ in range(2)]
  outputs = [job.communicate(timeout=300) for job in jobs]
  assert [job.returncode for job in jobs] == [0, 0], outputs[0][1][-2000:] + outputs[1][1][-2000:]
  assert [out.strip().splitlines()[-1] for out, _ in outputs] == ['4000', '4000']


def test_the_best_checkpoint_survives_restarts_and_ties_go_to_the_earliest(tmp_path):
  config = base.get_config()
  config.checkpoint.keep = 1
  workdir = str(tmp_path / 'run')

  def save(mngr, step, accuracy):
    state = {'step': jnp.asarray(step), 'w': jnp.full(3, float(step))}
    mngr.save(step, args=checkpoint.ocp.args.StandardSave(state),
              metrics={'accuracy': accuracy, 'step': step})
    mngr.wait_until_finished()

  mngr = checkpoint.manager(workdir, config)
  for step, accuracy in ((10, 0.5), (20, 0.99), (30, 0.6)):
    save(mngr, step, accuracy)
  assert mngr.all_steps() == [20, 30] and mngr.best_step() == 20
  mngr.close()
  mngr = checkpoint.manager(workdir, config)  # a restarted run
  assert mngr.best_step() == 20
  save(mngr, 40, 0.99)
  save(mngr, 50, float('nan'))  # a diverged evaluation never ranks first
  assert mngr.all_steps() == [20, 50] and mngr.best_step() == 20
  mngr.close()
  assert checkpoint.manager(workdir, config, read_only=True).best_step() == 20
