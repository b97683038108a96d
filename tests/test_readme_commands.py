"""The README's first command, run exactly as a newcomer would, reaches the stated accuracy."""

import glob
import os
import re
import shutil
import subprocess

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _two_commands() -> list[str]:
  readme = open(os.path.join(REPO, 'README.md'), encoding='utf-8').read()
  block = readme.split('## The two commands', 1)[1].split('```bash', 1)[1].split('```', 1)[0]
  return [line.split('#')[0].strip() for line in block.strip().splitlines()]


def test_readme_shows_the_two_commands():
  assert _two_commands() == ['./launch.sh', './launch.sh test']


def test_launch_trains_the_default_experiment_to_98_percent():
  # A newcomer's machine: one CPU device, none of the test suite's forced devices.
  env = {k: v for k, v in os.environ.items() if k not in ('XLA_FLAGS', 'JAX_PLATFORMS')}
  result = subprocess.run(_two_commands()[0].split(), cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  accuracy = float(re.search(r'^test accuracy ([0-9.]+)$', result.stdout, re.M).group(1))
  workdir = os.path.dirname(re.search(r'^checkpoints: (\S+)$', result.stdout, re.M).group(1))
  try:
    assert accuracy >= 0.98
    assert os.path.basename(workdir).startswith('default-')
    assert glob.glob(os.path.join(workdir, 'tensorboard', 'events.out.tfevents.*'))
    assert os.listdir(os.path.join(workdir, 'checkpoints'))
    assert f'tensorboard --logdir {workdir}/tensorboard' in result.stdout
  finally:
    shutil.rmtree(workdir, ignore_errors=True)
