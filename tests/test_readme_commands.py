"""The README's first command, run exactly as a newcomer would, reaches the stated accuracy."""

import glob
import json
import os
import re
import shutil
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _two_commands() -> list[str]:
  readme = open(os.path.join(REPO, 'README.md'), encoding='utf-8').read()
  block = readme.split('## The two commands', 1)[1].split('```bash', 1)[1].split('```', 1)[0]
  return [line.split('#')[0].strip() for line in block.strip().splitlines()]


def test_readme_shows_the_two_commands():
  assert _two_commands() == ['./launch.sh', './launch.sh test']


@pytest.mark.slow
def test_launch_trains_the_default_experiment_to_98_percent():
  # A newcomer's machine: one CPU device, none of the test suite's forced devices.
  env = {k: v for k, v in os.environ.items() if k not in ('XLA_FLAGS', 'JAX_PLATFORMS')}
  result = subprocess.run(_two_commands()[0].split(), cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  # The end of the run, as the README's first screen describes it.
  val, test = map(float, re.search(r'^last \(step \d+\) +([0-9.]+) +([0-9.]+)$', result.stdout,
                                   re.M).groups())
  tensorboard, logdir = re.search(r'^curves: (\S+) --logdir (\S+)$', result.stdout, re.M).groups()
  workdir = os.path.join(REPO, os.path.dirname(logdir))
  try:
    assert test >= 0.98 and val >= 0.98
    assert os.path.basename(workdir).startswith('default-')
    final = json.load(open(os.path.join(workdir, 'final_metrics.json')))
    assert final['last']['test']['accuracy'] == test and final['splits']['test'] == 'test'
    assert glob.glob(os.path.join(workdir, 'tensorboard', 'events.out.tfevents.*'))
    assert os.listdir(os.path.join(workdir, 'checkpoints'))
    assert tensorboard == os.path.join('.venv', 'bin', 'tensorboard')
    readme = open(os.path.join(REPO, 'README.md'), encoding='utf-8').read()
    first_screen = readme.split('## Train', 1)[0]
    for leaves in ('config.json', 'checkpoints/', 'tensorboard/', 'metrics.jsonl',
                   'final_metrics.json', 'val accuracy', 'test accuracy'):
      assert leaves in first_screen, leaves
  finally:
    shutil.rmtree(workdir, ignore_errors=True)


def _python_blocks(path: str) -> list[str]:
  text = open(os.path.join(REPO, path), encoding='utf-8').read()
  return [block.split('```', 1)[0] for block in text.split('```python\n')[1:]]


def test_the_analysis_snippets_run_as_written(tmp_path, data_dir):
  """The README's and docs/analysis.md's Python, run against a real run at the path they name."""
  from cnn_jax.train import loop
  from tests.test_train import digits_config
  loop.train_and_evaluate(digits_config(data_dir), str(tmp_path / 'runs' / 'digits'))
  blocks = _python_blocks('README.md') + _python_blocks(os.path.join('docs', 'analysis.md'))
  assert len(blocks) >= 2 and all("'runs/digits'" in b for b in blocks)
  cwd = os.getcwd()
  os.chdir(tmp_path)
  try:
    for block in blocks:
      exec(compile(block, 'snippet', 'exec'), {})  # pylint: disable=exec-used
  finally:
    os.chdir(cwd)
