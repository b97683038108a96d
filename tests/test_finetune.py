"""Starting a run from weights: a linear probe and a full fine-tune from a converted torchvision
file, a run started from another run's checkpoint, frozen parameters bit-for-bit unchanged."""

import logging

import flax
import numpy as np
import pytest
import torch

from benchmarks import torchvision_cpu
from cnn_jax.data import image_folder
from cnn_jax.errors import ConfigError
from cnn_jax.models import pretrained
from cnn_jax.train import checkpoint, loop
from experiments import finetune_folder
from tests.test_train import final_params

torchvision = torchvision_cpu.load()

pytestmark = pytest.mark.slow


@pytest.fixture(scope='module')
def weights(tmp_path_factory):
  torch.manual_seed(0)
  model = torchvision.models.resnet18(weights=None).eval()
  for module in model.modules():
    if isinstance(module, torch.nn.BatchNorm2d):
      module.running_mean.uniform_(-0.5, 0.5)
      module.running_var.uniform_(0.5, 2.0)
  path = str(tmp_path_factory.mktemp('weights') / 'resnet18-f37072fd.pth')
  torch.save(model.state_dict(), path)
  return path


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
  root = str(tmp_path_factory.mktemp('images'))
  image_folder.write_synthetic(root, classes=3, per_class=8, sizes=(40, 80))
  return root


def _config(folder, data_dir, source, **fields):
  config = finetune_folder.get_config()
  config.model.name = 'resnet18'
  config.init['from'] = source
  config.data.folder, config.data.data_dir, config.data.workers = folder, data_dir, 0
  config.data.image_size, config.batch_size, config.eval_batch_size = 32, 8, 8
  config.num_steps, config.conv_impl = 2, 'xla'
  config.log_every = config.eval_every = config.checkpoint.every = 2
  for field, value in fields.items():
    section, _, name = field.rpartition('.')
    (config[section] if section else config)[name] = value
  return config


def _flat(tree):
  return flax.traverse_util.flatten_dict(tree, sep='/')


def test_linear_probe_trains_only_the_head_then_a_run_starts_from_it(folder, weights, tmp_path,
                                                                     caplog):
  data_dir = str(tmp_path / 'tfds')
  probe = str(tmp_path / 'probe')
  with caplog.at_level(logging.INFO):
    loop.train_and_evaluate(_config(folder, data_dir, weights, **{'init.head_only': True,
                                                                  'optim.lr': 0.1}), probe)
  assert 'freshly initialised: params/head/bias, params/head/kernel' in caplog.text
  converted = _flat(pretrained.load_pretrained('resnet18', weights)[1]['params'])
  trained = _flat(final_params(probe))
  assert trained['head/kernel'].shape == (512, 3)
  for path, value in trained.items():
    if not path.startswith('head/'):
      np.testing.assert_array_equal(value, converted[path], err_msg=path)  # bit for bit
  mngr = checkpoint.manager(probe, read_only=True)
  statistics = _flat(mngr.restore(mngr.latest_step())['batch_stats'])
  file_statistics = _flat(pretrained.load_pretrained('resnet18', weights)[1]['batch_stats'])
  for path, value in statistics.items():  # BatchNorm frozen too
    np.testing.assert_array_equal(value, file_statistics[path], err_msg=path)

  # Another run from the probe's checkpoint, everything but the head frozen by pattern.
  second = str(tmp_path / 'second')
  loop.train_and_evaluate(_config(folder, data_dir, f'{probe}:latest',
                                  **{'optim.trainable': '^head/'}), second)
  continued = _flat(final_params(second))
  for path, value in continued.items():
    if not path.startswith('head/'):
      np.testing.assert_array_equal(value, trained[path], err_msg=path)
  assert not np.array_equal(continued['head/kernel'], trained['head/kernel'])


def test_full_finetune_moves_every_layer_and_resuming_never_reapplies_the_weights(
    folder, weights, tmp_path, caplog):
  data_dir, workdir = str(tmp_path / 'tfds'), str(tmp_path / 'full')
  loop.train_and_evaluate(_config(folder, data_dir, weights, **{'optim.lr': 0.01}), workdir)
  converted = _flat(pretrained.load_pretrained('resnet18', weights)[1]['params'])
  tuned = _flat(final_params(workdir))
  assert not np.array_equal(tuned['stem/Conv_0/kernel'], converted['stem/Conv_0/kernel'])
  # Close to the weights it started from: two small steps, not a fresh initialisation.
  assert np.abs(tuned['stem/Conv_0/kernel'] - converted['stem/Conv_0/kernel']).max() < 0.05
  caplog.clear()
  with caplog.at_level(logging.INFO):
    loop.train_and_evaluate(_config(folder, data_dir, weights, num_steps=4,
                                    **{'optim.lr': 0.01}), workdir)
  assert 'Resumed from' in caplog.text and 'Initialised' not in caplog.text


def test_launch_mistakes_are_one_line_errors(folder, weights, tmp_path):
  data_dir = str(tmp_path / 'tfds')
  with pytest.raises(ConfigError, match='no such file.*docs/pretrained.md'):
    loop.train_and_evaluate(_config(folder, data_dir, str(tmp_path / 'resnet18.pth')),
                            str(tmp_path / 'a'))
  with pytest.raises(ConfigError, match='neither a weights file'):
    loop.train_and_evaluate(_config(folder, data_dir, str(tmp_path)), str(tmp_path / 'b'))
  config = _config(folder, data_dir, weights)
  config.model.name = 'simple_cnn'
  with pytest.raises(ConfigError, match='no torchvision twin'):
    loop.train_and_evaluate(config, str(tmp_path / 'c'))
  with pytest.raises(ConfigError, match='head_only=True .* set config.init.from'):
    loop.train_and_evaluate(_config(folder, data_dir, '', **{'init.head_only': True}),
                            str(tmp_path / 'd'))
  with pytest.raises(ConfigError, match='matches no parameter'):
    loop.train_and_evaluate(_config(folder, data_dir, weights, **{'optim.trainable': 'nothing'}),
                            str(tmp_path / 'e'))
