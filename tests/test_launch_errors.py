"""Launch mistakes, made as a user makes them: one line on stderr, exit code 2, no traceback; and
the paths a user types mean what they meant in the directory they typed them in."""

import concurrent.futures
import json
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest

from cnn_jax.data import sources
from tests.test_train import REPO

TINY_NETS = '''
import flax.linen as nn


class TinyNet(nn.Module):
  num_classes: int

  @nn.compact
  def __call__(self, x, train: bool = False):
    return nn.Dense(self.num_classes)(x.reshape(x.shape[0], -1))


class NoClasses(nn.Module):
  @nn.compact
  def __call__(self, x, train: bool = False):
    return nn.Dense(3)(x.reshape(x.shape[0], -1))
'''


def _launch(*args, cwd=REPO) -> subprocess.CompletedProcess:
  return subprocess.run([os.path.join(REPO, 'launch.sh'), *args], cwd=cwd, capture_output=True,
                        text=True, timeout=300)


@pytest.fixture(scope='module')
def nets(tmp_path_factory):
  folder = tmp_path_factory.mktemp('user')
  (folder / 'nets.py').write_text(TINY_NETS, encoding='utf-8')
  return folder


def _mistakes(data_dir: str, nets) -> dict[str, tuple[list[str], str]]:
  """{what: (arguments, what the one line must say)}."""
  data = f'--config.data.data_dir={data_dir}'
  return {
      'a value of the wrong type': (['--config.batch_size=abc'],
                                    "flag --config.batch_size=abc: invalid literal for int()"),
      'a config file that does not exist': (['--config=experiments/nope.py'],
                                            'no such file'),
      'an experiment name that does not exist': (['--config=nope'], 'cifar10_resnet18, default'),
      'a misspelt flag': (['--confg=experiments/default.py'],
                          "Unknown command line flag 'confg'. Did you mean: config"),
      'a misspelt config field': (['--config.optim.lrr=0.1'],
                                  "Unknown config field 'lrr' Did you mean \"lr\""),
      'a misspelt model field': (['--config.model.kwargs.widthz=3'],
                                 "Model 'simple_cnn' has no field widthz"),
      'a model field of the wrong type': (['--config.model.kwargs.widths=abc'],
                                          "config.model.kwargs.widths='abc': expected tuple"),
      'a model field without a value': (['--config.model.kwargs.widths', '--workdir=x'],
                                        'needs a value'),
      'a flag that swallowed the next one': (['--workdir', '--config.seed=1'],
                                             "--workdir took '--config.seed=1' as its value"),
      'a stray argument': (['experiments/default.py'], 'Unexpected arguments experiments/default.py'),
      'a config file argument it cannot take': (['--config=experiments/default.py:x'],
                                                'get_config() takes 0 positional arguments'),
      'a split the dataset lacks': ([data, '--config.data.val_split=validation'],
                                    "Dataset 'digits' has no split 'validation'; its splits are "
                                    'test (400 examples), train (1,397 examples).'),
      'a model without num_classes': ([data, f'--config.model.name={nets / "nets.py"}:NoClasses'],
                                      'takes no num_classes'),
      'a coordinator without its peers': (['--coordinator_address=127.0.0.1:1234'],
                                          'needs --num_processes and --process_id'),
      'a range': ([data, '--config.optim.lr=-1'], 'config.optim.lr=-1.0: expected a value > 0.'),
  }


@pytest.mark.slow
def test_every_launch_mistake_is_one_line_and_exit_code_2(tmp_path, data_dir, nets):
  sources.load('digits', 'train', data_dir)  # prepared: its one "Preparing" line is not a mistake's
  mistakes = _mistakes(data_dir, nets)
  with concurrent.futures.ThreadPoolExecutor(4) as pool:
    results = dict(zip(mistakes, pool.map(
        lambda args: _launch(*args, f'--workdir={tmp_path / "never"}' if not any(
            a.startswith('--workdir') for a in args) else '--config.num_steps=1'),
        [args for args, _ in mistakes.values()])))
  for what, (_, said) in mistakes.items():
    result = results[what]
    errors = [l for l in result.stderr.splitlines() if l.startswith('Error: ')]
    assert result.returncode == 2, (what, result.stderr[-2000:])
    assert 'Traceback' not in result.stderr, what
    assert len(errors) == 1 and said in errors[0], (what, result.stderr[-2000:])
    assert len(result.stderr.splitlines()) <= 2, (what, result.stderr)  # at most the start line
  assert not (tmp_path / 'never').exists()  # nothing was written


def test_a_verbose_launch_shows_the_traceback():
  result = _launch('--config.batch_size=abc', '--verbosity=1')
  assert result.returncode != 0 and 'Traceback' in result.stderr


def test_an_unprepared_dataset_names_commands_that_work_as_printed(tmp_path):
  result = _launch('--config=mnist_lenet5', f'--config.data.data_dir={tmp_path}',
                   f'--workdir={tmp_path / "run"}', cwd=tmp_path)
  assert result.returncode == 1 and 'Traceback' not in result.stderr
  error = next(l for l in result.stderr.splitlines() if l.startswith('Error: '))
  assert "Dataset 'mnist' is not prepared as array_record" in error
  commands = re.search(r': (\S+) install -e (\S+) && (\S+) build mnist', error)
  pip, checkout, tfds = commands.groups()
  # The venv's own tools and this checkout, as paths from the directory the user is in.
  assert os.path.samefile(os.path.join(tmp_path, pip), os.path.join(REPO, '.venv', 'bin', 'pip'))
  assert os.path.samefile(os.path.join(tmp_path, shlex.split(checkout)[0].split('[')[0]), REPO)
  assert tfds.endswith(os.path.join('.venv', 'bin', 'tfds'))


@pytest.mark.slow
def test_paths_typed_in_another_directory_resolve_there(tmp_path, data_dir, nets):
  result = _launch('--config=default', '--workdir=runs/mine', '--config.model.name=nets.py:TinyNet',
                   f'--config.data.data_dir={data_dir}', '--config.num_steps=20',
                   '--config.eval_every=10', cwd=nets)
  assert result.returncode == 0, result.stderr[-3000:]
  workdir = nets / 'runs' / 'mine'
  final = json.load(open(workdir / 'final_metrics.json'))
  assert final['last']['step'] == 20 and not os.path.exists(os.path.join(REPO, 'runs', 'mine'))
  # What a run prints: each evaluation as it happens with the best so far, the time, the
  # figures by checkpoint and split, and a TensorBoard command that works as printed here.
  assert re.search(r'step 10/20: val accuracy [0-9.]+ .*\((best so far|best: step \d+)\)',
                   result.stderr)
  assert re.search(r'^Finished in \d+ s \(20 steps trained in this launch\)\.$', result.stdout, re.M)
  assert re.search(r'^last \(step 20\) +[0-9.]+ +[0-9.]+$', result.stdout, re.M)
  assert 'val: train[90%:] (140 examples); test: test (400 examples)' in result.stdout
  tensorboard, logdir = re.search(r'^curves: (\S+) --logdir (\S+)$', result.stdout, re.M).groups()
  assert os.access(os.path.join(nets, tensorboard), os.X_OK)
  assert logdir == os.path.join('runs', 'mine', 'tensorboard') and os.listdir(nets / logdir)
  # No third-party INFO lines (a missing TPU backend, dataset info loads), and short prefixes.
  assert "backend 'tpu'" not in result.stderr and 'Load dataset info' not in result.stderr
  assert all(re.match(r'\d\d:\d\d:\d\d\.\d{3} |  ', line) for line in result.stderr.splitlines()), (
      result.stderr[:2000])


@pytest.mark.slow
def test_the_config_is_logged_as_the_flags_that_differ_from_the_base(tmp_path, data_dir):
  result = subprocess.run(
      [sys.executable, '-m', 'cnn_jax.main', f'--workdir={tmp_path / "run"}',
       f'--config.data.data_dir={data_dir}', '--config.num_steps=1', '--config.optim.lr=0.02'],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  block = result.stderr.split('set differently from experiments/base.py:\n', 1)[1]
  flags = [l.strip() for l in block.splitlines() if l.startswith('  --config.')]
  assert '--config.optim.lr=0.02' in flags and '--config.batch_size=64' in flags
  assert '--config.data.mean=(0.3,)' in flags  # tuples as the flags that set them
  assert not any(f.startswith('--config.optim.momentum') for f in flags)  # base's own value


def test_a_first_launch_says_it_is_setting_up_before_the_silent_install(tmp_path):
  # A fresh clone without .venv; a Python that cannot make one stops the set-up after the line.
  for name in ('launch.sh', 'setup.cfg', 'pyproject.toml', 'requirements.lock'):
    shutil.copy(os.path.join(REPO, name), tmp_path / name)
  result = subprocess.run([str(tmp_path / 'launch.sh')], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, env=dict(os.environ, PYTHON='false'))
  assert result.returncode != 0
  assert result.stderr.splitlines()[0] == (
      f'Setting up the environment in {tmp_path}/.venv (first time: a few minutes, then never '
      'again) ...')
