"""The analysis notebooks, executed as `./launch.sh notebooks` does, against short real runs."""

import os
import subprocess
import sys

import nbformat
import pytest

from tests.test_train import REPO

NOTEBOOKS = os.path.join(REPO, 'notebooks')
# Figures each notebook draws (with a short run every digit class still has a mistake to show).
FIGURES = {'01_convolution_by_hand': 4, '02_inspect_a_run': 12, '03_why_did_it_say_that': 2,
           '04_sequence_models': 4, '05_pretrained_network': 6}


def test_notebooks_are_stored_without_outputs():
  stored = sorted(f[:-6] for f in os.listdir(NOTEBOOKS) if f.endswith('.ipynb'))
  assert stored == sorted(FIGURES)
  for name in stored:
    notebook = nbformat.read(os.path.join(NOTEBOOKS, f'{name}.ipynb'), as_version=4)
    code = [c for c in notebook.cells if c.cell_type == 'code']
    assert all(not c.outputs and c.execution_count is None for c in code), name


@pytest.mark.slow
def test_every_notebook_runs_and_draws_its_figures(tmp_path):
  # A fresh home: the notebooks prepare their offline datasets there, not in the user's.
  env = dict(os.environ, HOME=str(tmp_path / 'home'))
  out, runs = tmp_path / 'out', tmp_path / 'runs'
  # The run `./launch.sh` leaves (runs/default-<time>): notebook 02 opens the newest such run.
  for stamp in ('20260101-000000', '20260102-000000'):
    made = subprocess.run([os.path.join(REPO, 'launch.sh'), '--config.num_steps=4',
                           f'--workdir={runs / f"default-{stamp}"}'], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr[-3000:]
  result = subprocess.run(
      [sys.executable, os.path.join(NOTEBOOKS, 'execute.py'), f'--runs={runs}', '--steps=4',
       f'--out={out}', f'--figures={tmp_path / "figures"}'], cwd=REPO, env=env,
      capture_output=True, text=True, timeout=1500)
  assert result.returncode == 0, result.stderr[-4000:]
  for name, count in FIGURES.items():
    notebook = nbformat.read(out / f'{name}.ipynb', as_version=4)
    outputs = [o for c in notebook.cells if c.cell_type == 'code' for o in c.outputs]
    assert not [o for o in outputs if o.output_type == 'error'], name
    figures = [o for o in outputs if 'image/png' in o.get('data', {})]
    assert len(figures) == count, (name, len(figures))
    html = (out / f'{name}.html').read_text(encoding='utf-8')
    assert html.count('src="data:image/png;base64') == count, name
    # No training logs or progress bars among the outputs: a training's console is its log file.
    text = ''.join(o.get('text', '') for o in outputs if o.output_type == 'stream')
    assert 'steps/s' not in text and '\r' not in text and 'First step' not in text, (name, text)
    assert (tmp_path / 'figures' / f'{name}.png').stat().st_size > 10_000, name
  assert 'runs/default-20260102-000000 at step 4' in (out / '02_inspect_a_run.ipynb').read_text(
      encoding='utf-8').replace(str(tmp_path) + '/', '')
  # Each notebook trained its own run, as a newcomer's first open would, except 02, which opened
  # the newest default run. Notebook 05 converts a random torchvision network into
  # runs/pretrained (no download here).
  assert sorted(os.listdir(runs)) == ['default-20260101-000000', 'default-20260102-000000',
                                      'mnist1d_wavenet', 'motifs_deepbind', 'pretrained',
                                      'shapes_fcn']
  assert os.path.exists(runs / 'shapes_fcn' / 'train.log')
