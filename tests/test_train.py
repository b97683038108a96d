"""The training system end to end: real TFDS sources, Orbax checkpoints, TensorBoard events."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from tensorboard.backend.event_processing import event_accumulator

from cnn_jax.data import sources
from cnn_jax.train import checkpoint, loop
from experiments import cifar10_resnet18, default, imagenet_resnet50, mnist1d_cnn, mnist_lenet5

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def override(config, overrides):
  for key, value in overrides.items():
    node = config
    *path, leaf = key.split('.')
    for part in path:
      node = node[part]
    node[leaf] = value
  return config


def digits_config(data_dir, **overrides):
  config = default.get_config()
  config.data.data_dir = data_dir
  config.model.kwargs.widths = (8, 16)
  config.batch_size = 32
  config.eval_batch_size = 48  # 400 test digits: the last batch is partial
  config.num_steps = 6
  config.log_every = config.eval_every = config.checkpoint.every = 3
  return override(config, overrides)


def final_params(workdir):
  mngr = checkpoint.manager(workdir, read_only=True)
  restored = mngr.restore(mngr.latest_step())
  return restored['params']


@pytest.mark.slow
def test_default_experiment_leaves_checkpoints_logs_and_counts_every_example(tmp_path, data_dir):
  workdir = str(tmp_path / 'run')
  final = loop.train_and_evaluate(digits_config(data_dir), workdir)
  metrics = final['last']['test']
  assert metrics['count'] == 400  # 400 = 8 batches of 48 + 16: every test digit exactly once
  assert 0.0 <= metrics['accuracy'] <= 1.0
  # Validation is the last tenth of train, held out of training; the test split is apart.
  assert final['splits'] == {'train': 'train[:90%]', 'val': 'train[90%:]', 'test': 'test'}
  assert final['last']['val']['count'] == 140 and final['best']['step'] in (3, 6)
  assert final == json.load(open(os.path.join(workdir, 'final_metrics.json')))
  assert json.load(open(os.path.join(workdir, 'config.json')))['data']['name'] == 'digits'
  lines = [json.loads(l) for l in open(os.path.join(workdir, 'metrics.jsonl'))]
  # TensorBoard reads the same scalars, at the same steps.
  events = event_accumulator.EventAccumulator(os.path.join(workdir, 'tensorboard'))
  events.Reload()
  for split in ('train', 'val'):
    logged = [(l['step'], l['loss']) for l in lines if l['split'] == split]
    read = [(e.step, e.value) for e in events.Scalars(f'{split}/loss')]
    assert logged and [s for s, _ in read] == [s for s, _ in logged]
    np.testing.assert_allclose([v for _, v in read], [v for _, v in logged], rtol=1e-6)
  assert {l['split'] for l in lines} == {'train', 'val'}
  assert {'loss', 'learning_rate', 'grad_norm', 'param_norm', 'steps_per_second',
          'examples_per_second'} <= set(lines[0])
  assert checkpoint.manager(workdir, read_only=True).all_steps() == [3, 6]
  # The reported accuracy is the model's on all 400 digits, recomputed here without the pipeline.
  from cnn_jax.data import sources
  source = sources.load('digits', 'test', data_dir)
  images = np.stack([source.records[i]['image'] for i in range(len(source))]).astype(np.float32)
  labels = np.asarray([source.records[i]['label'] for i in range(len(source))])
  config = digits_config(data_dir)
  model = loop.build_model(config, 10)
  mngr = checkpoint.manager(workdir, read_only=True)
  state = mngr.restore(6)
  normalized = (images / 255 - np.asarray(config.data.mean)) / np.asarray(config.data.std)
  logits = model.apply({'params': state['params'], 'batch_stats': state['batch_stats']},
                       normalized, train=False)
  assert float((np.asarray(logits).argmax(-1) == labels).mean()) == pytest.approx(metrics['accuracy'])


@pytest.mark.slow
def test_resume_equals_an_uninterrupted_run(tmp_path, data_dir):
  # A step schedule whose lr drops at step 4 (0.1 of a 43-step epoch): between stop and end.
  schedule = {'optim.schedule': 'step', 'optim.decay_epochs': (0.1,)}
  straight = str(tmp_path / 'straight')
  loop.train_and_evaluate(digits_config(data_dir, num_steps=6, **schedule), straight)
  resumed = str(tmp_path / 'resumed')
  loop.train_and_evaluate(digits_config(data_dir, num_steps=3, **schedule), resumed)
  loop.train_and_evaluate(digits_config(data_dir, num_steps=6, **schedule), resumed)
  a, b = final_params(straight), final_params(resumed)
  jax.tree_util.tree_map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6), a, b)


def _loss_curve(workdir):
  return [l['loss'] for l in map(json.loads, open(os.path.join(workdir, 'metrics.jsonl')))
          if l['split'] == 'train']


@pytest.mark.slow
def test_jit_pmap_and_single_device_give_the_same_curve(tmp_path, data_dir, monkeypatch):
  assert jax.device_count() == 4
  curves = {}
  for mode in ('jit', 'pmap'):
    workdir = str(tmp_path / mode)
    loop.train_and_evaluate(digits_config(data_dir, **{'parallel.mode': mode, 'log_every': 1}),
                            workdir)
    curves[mode] = (_loss_curve(workdir), final_params(workdir))
  from cnn_jax.train import parallel
  monkeypatch.setattr(parallel, 'make_mesh', lambda: parallel.Mesh(
      np.asarray(jax.devices()[:1]), ('data',), axis_types=(parallel.AxisType.Auto,)))
  workdir = str(tmp_path / 'single')
  loop.train_and_evaluate(digits_config(data_dir, log_every=1), workdir)
  curves['single'] = (_loss_curve(workdir), final_params(workdir))
  for mode in ('pmap', 'single'):
    np.testing.assert_allclose(curves[mode][0], curves['jit'][0], rtol=1e-4)
    jax.tree_util.tree_map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-3, atol=1e-5),
                           curves[mode][1], curves['jit'][1])


@pytest.mark.slow
def test_restore_onto_a_different_device_count(tmp_path, data_dir, monkeypatch):
  workdir = str(tmp_path / 'run')
  loop.train_and_evaluate(digits_config(data_dir, num_steps=3), workdir)
  from cnn_jax.train import parallel
  monkeypatch.setattr(parallel, 'make_mesh', lambda: parallel.Mesh(
      np.asarray(jax.devices()[:2]), ('data',), axis_types=(parallel.AxisType.Auto,)))
  metrics = loop.train_and_evaluate(digits_config(data_dir, num_steps=6), workdir)
  assert checkpoint.manager(workdir, read_only=True).latest_step() == 6
  assert metrics['last']['test']['count'] == 400


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, data_dir):
  workdir = str(tmp_path / 'run')
  loop.train_and_evaluate(digits_config(data_dir, num_steps=3), workdir)
  with pytest.raises(FloatingPointError, match='last checkpoint \\(step 3, all finite\\)'):
    loop.train_and_evaluate(digits_config(data_dir, **{'num_steps': 9, 'optim.lr': 1e30,
                                                       'optim.schedule': 'constant'}), workdir)
  assert checkpoint.manager(workdir, read_only=True).latest_step() == 3


def test_config_typo_and_bad_names_are_clear(tmp_path, data_dir):
  result = subprocess.run(
      [sys.executable, '-m', 'cnn_jax.main', f'--workdir={tmp_path}', '--config.optim.lrr=0.1'],
      cwd=REPO, capture_output=True, text=True, timeout=120)
  assert result.returncode == 2 and 'Traceback' not in result.stderr
  assert result.stderr.strip().splitlines() == [
      'Error: Unknown config field \'lrr\' Did you mean "lr" instead of "lrr"? Configs are locked, '
      'so a typo cannot add a field silently: check the spelling against ./launch.sh '
      '--print_config (every field).']
  with pytest.raises(ValueError, match="config.optim.name='sgdd'"):
    loop.train_and_evaluate(digits_config(data_dir, **{'optim.name': 'sgdd'}), str(tmp_path / 'x'))
  with pytest.raises(ValueError, match="config.checkpoint.best_metric='acc'"):
    loop.train_and_evaluate(digits_config(data_dir, **{'checkpoint.best_metric': 'acc'}),
                            str(tmp_path / 'z'))
  with pytest.raises(ValueError, match='divisible by the number of devices \\(4\\)'):
    loop.train_and_evaluate(digits_config(data_dir, eval_batch_size=30), str(tmp_path / 'w'))
  assert not os.path.exists(os.path.join(tmp_path, 'w', 'checkpoints'))  # failed before any work
  with pytest.raises(FileNotFoundError, match='tfds build cifar10 .*--file_format=array_record'):
    config = cifar10_resnet18.get_config()
    config.data.data_dir = str(tmp_path / 'empty')
    loop.train_and_evaluate(config, str(tmp_path / 'y'))


@pytest.mark.slow
def test_mnist1d_experiment_runs(tmp_path, data_dir):
  config = mnist1d_cnn.get_config()
  config.data.data_dir = data_dir
  config.num_steps, config.eval_batch_size = 4, 200
  config.log_every = config.eval_every = 4
  metrics = loop.train_and_evaluate(config, str(tmp_path / 'run'))
  assert metrics['last']['test']['count'] == 1000 and metrics['last']['val']['count'] == 400


@pytest.mark.parametrize('experiment,overrides', [
    (mnist_lenet5, {}),
    (cifar10_resnet18, {'model.kwargs.width': 8}),
    # Worker processes would not see the mock: its examples exist in this process alone.
    (imagenet_resnet50, {'model.kwargs.width': 4, 'data.image_size': 64, 'data.workers': 0}),
])
@pytest.mark.slow
def test_catalogue_experiments_run_on_mock_data(tmp_path, experiment, overrides, monkeypatch):
  """TFDS catalogue datasets cannot be downloaded here: tfds.testing.mock_data stands in (its
  images decoded: it cannot encode them without TensorFlow)."""
  monkeypatch.setattr(sources, 'READ_ENCODED_IMAGES', False)
  config = experiment.get_config()
  config.batch_size = config.eval_batch_size = 8
  config.num_steps, config.log_every, config.eval_every = 2, 1, 2
  override(config, overrides)
  with tfds.testing.mock_data(num_examples=16):
    metrics = loop.train_and_evaluate(config, str(tmp_path / 'run'))
  evaluated = metrics['last']['test' if 'test' in metrics['last'] else 'val']
  assert evaluated['count'] == 16 and np.isfinite(evaluated['loss'])
