"""`load_run` on real runs: any device count, EMA, best step, history, every error it names."""

import json
import os
import shutil
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from cnn_jax import analysis
from cnn_jax.train import checkpoint, loop
from tests.test_train import REPO, digits_config


@pytest.fixture(scope='module')
def trained(tmp_path_factory, data_dir):
  """A run trained on the suite's 4 CPU devices (eval and checkpoint every 3 steps)."""
  workdir = str(tmp_path_factory.mktemp('analysis') / 'run')
  loop.train_and_evaluate(digits_config(data_dir, num_steps=9), workdir)
  return workdir


def _copy(trained, workdir) -> str:
  shutil.copytree(trained, workdir)
  return str(workdir)


@pytest.mark.slow
def test_a_four_device_run_opens_on_one_device_and_reproduces_its_final_metrics(trained):
  assert jax.device_count() == 4
  run = analysis.load_run(trained)
  assert run.step == 9 and run.steps()[-1] == 9
  assert set(run.variables) == {'params', 'batch_stats'}  # never the optimiser state
  for leaf in jax.tree_util.tree_leaves(run.variables):
    assert leaf.sharding.device_set == {jax.devices()[0]}
  final = json.load(open(os.path.join(trained, 'final_metrics.json')))['last']
  for split, count in (('test', 400), ('val', 140)):
    metrics = run.evaluate(split)
    assert metrics['count'] == final[split]['count'] == count
    assert metrics['accuracy'] == final[split]['accuracy']
    assert metrics['loss'] == pytest.approx(final[split]['loss'], rel=1e-6)
  test = run.predict('test')
  assert len(test['label']) == 400
  assert np.mean(test['logits'].argmax(-1) == test['label']) == pytest.approx(
      final['test']['accuracy'])
  np.testing.assert_allclose(run.apply(test['image'][:5]), test['logits'][:5], rtol=1e-5,
                             atol=1e-6)
  # The roles name the run's own splits; any split spec of the dataset works too.
  assert sum(len(b['label']) for b in run.eval_batches('train')) == 1257
  assert sum(len(b['label']) for b in run.eval_batches('train[:10]')) == 10
  # Raw examples as the dataset stores them become the inputs the run was evaluated on.
  from cnn_jax.data import sources
  raw = sources.load('digits', 'test', run.config.data.data_dir).records
  np.testing.assert_allclose(run.preprocess([raw[i]['image'] for i in range(5)]),
                             test['image'][:5], rtol=1e-6)


def test_history_holds_each_step_once_and_best_is_the_best_kept_eval(trained):
  run = analysis.load_run(trained)
  history = run.history()
  steps, losses = history['train']['loss']
  assert list(steps) == [3, 6, 9] and np.all(np.isfinite(losses))
  records = [json.loads(l) for l in open(os.path.join(trained, 'metrics.jsonl'))]
  evals = {r['step']: r['accuracy'] for r in records if r['split'] == 'val'}
  assert dict(zip(*history['val']['accuracy'])) == evals
  kept = run.steps()
  best = max(kept, key=lambda s: (evals[s], -s))  # ties go to the earliest step
  assert analysis.load_run(trained, step='best').step == best
  assert analysis.load_run(trained, step=kept[0]).step == kept[0]


def test_an_ema_run_opens_with_the_averaged_parameters(tmp_path, data_dir):
  workdir = str(tmp_path / 'ema')
  final = loop.train_and_evaluate(digits_config(data_dir, num_steps=6, ema_decay=0.5), workdir)
  run = analysis.load_run(workdir)
  saved = checkpoint.manager(workdir, read_only=True).restore(6)
  jax.tree_util.tree_map(np.testing.assert_array_equal, run.variables['params'],
                         saved['ema_params'])
  assert not np.allclose(saved['ema_params']['Dense_0']['kernel'], saved['params']['Dense_0']['kernel'])
  assert run.evaluate('test')['accuracy'] == final['last']['test']['accuracy']


def _error(workdir, **kwargs) -> str:
  with pytest.raises((FileNotFoundError, ValueError)) as info:
    analysis.load_run(workdir, **kwargs)
  message = str(info.value)
  assert '\n' not in message, message  # one line
  return message


def test_every_error_names_what_was_found_and_what_to_do(trained, tmp_path):
  assert 'does not exist' in _error(str(tmp_path / 'nothing'))
  os.makedirs(tmp_path / 'empty')
  assert 'no config.json' in _error(str(tmp_path / 'empty'))

  fresh = tmp_path / 'fresh'
  os.makedirs(fresh)
  shutil.copy(os.path.join(trained, 'config.json'), fresh)
  assert 'holds no checkpoint yet' in _error(str(fresh))
  os.makedirs(fresh / 'checkpoints' / '3.orbax-checkpoint-tmp-1700000000')
  assert 'only unfinished saves' in _error(str(fresh))

  message = _error(trained, step=5)
  assert 'no checkpoint at step 5' in message and '9' in message

  changed = _copy(trained, tmp_path / 'changed')
  config = json.load(open(os.path.join(changed, 'config.json')))
  config['model']['kwargs']['widths'] = [4, 8]
  json.dump(config, open(os.path.join(changed, 'config.json'), 'w'))
  message = _error(changed)
  assert 'no longer builds the model saved at step 9' in message
  assert 'config (4,) vs checkpoint (8,)' in message
  config['model']['name'] = 'no_such_net'
  json.dump(config, open(os.path.join(changed, 'config.json'), 'w'))
  assert 'does not build a model' in _error(changed)

  damaged = _copy(trained, tmp_path / 'damaged')
  step_dir = os.path.join(checkpoint.directory(damaged), '9', 'default')
  data = [os.path.join(d, f) for d, _, fs in os.walk(step_dir) for f in fs
          if os.path.basename(d) == 'd']  # the array data files (ocdbt)
  for path in data:
    with open(path, 'r+b') as f:
      f.truncate(os.path.getsize(path) // 3)
  message = _error(damaged)
  assert 'cannot be read' in message and 'open another step' in message
  assert analysis.load_run(damaged, step=6).step == 6  # the older step still opens


@pytest.mark.slow
def test_a_run_opens_while_training_still_writes_to_it(tmp_path, data_dir):
  workdir = str(tmp_path / 'live')
  process = subprocess.Popen(
      [sys.executable, '-m', 'cnn_jax.main', f'--workdir={workdir}',
       f'--config.data.data_dir={data_dir}', '--config.num_steps=300',
       '--config.checkpoint.every=20', '--config.eval_every=20', '--config.log_every=20',
       '--config.model.kwargs.widths=(8, 16)'],
      cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  opened = []
  try:
    while process.poll() is None:
      try:
        run = analysis.load_run(workdir)
      except FileNotFoundError:  # before config.json or the first checkpoint exists
        time.sleep(0.2)
        continue
      opened.append(run.step)
      assert run.evaluate('test')['count'] == 400
  finally:
    _, errors = process.communicate(timeout=300)
  assert process.returncode == 0, errors[-2000:]
  assert opened and opened[0] < 300, opened  # opened mid-run, not only after the end
  assert opened == sorted(opened)


@pytest.mark.slow
def test_a_resumed_run_opens_with_the_config_in_force_at_its_step(tmp_path, data_dir):
  workdir = str(tmp_path / 'resumed')
  loop.train_and_evaluate(digits_config(data_dir, num_steps=3), workdir)
  final = loop.train_and_evaluate(digits_config(data_dir, num_steps=6, eval_batch_size=80),
                                  workdir)
  assert json.load(open(os.path.join(workdir, 'config.json')))['eval_batch_size'] == 48
  assert analysis.load_run(workdir, step=3).config.eval_batch_size == 48
  run = analysis.load_run(workdir)
  assert run.step == 6 and run.config.eval_batch_size == 80 and run.config.num_steps == 6
  assert run.evaluate()['accuracy'] == final['last']['val']['accuracy']
