"""Executes the analysis notebooks into an output folder, with their outputs and an HTML copy.

  ./launch.sh notebooks                        # all of them, into runs/notebooks/
  ./launch.sh notebooks 02_inspect_a_run       # one
  ./launch.sh notebooks --runs=/tmp/r --steps=20 --out=/tmp/nb   # other runs; short training
  ./launch.sh notebooks --figures=docs/figures  # also the docs' figure of each notebook

A notebook's first code cell (tagged 'parameters', papermill's convention) sets ``RUNS`` (where
its runs live) and ``STEPS`` (the training length when a run is missing and the notebook starts
the shipped experiment itself; 0 means the experiment's own). ``--runs`` and ``--steps`` are
injected as a cell right after it, so the stored notebooks stay free of outputs and paths.
The images of the cells tagged 'figure', stacked, are the notebook's figure in the docs.
"""

import argparse
import base64
import glob
import io
import os
import sys
import time

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from nbconvert import HTMLExporter
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def notebooks() -> dict[str, str]:
  """``{name: path}`` of the stored notebooks, in order."""
  return {os.path.splitext(os.path.basename(p))[0]: p
          for p in sorted(glob.glob(os.path.join(HERE, '*.ipynb')))}


def _inject(notebook, parameters: dict) -> None:
  tagged = [i for i, cell in enumerate(notebook.cells)
            if 'parameters' in cell.get('metadata', {}).get('tags', [])]
  if not tagged:
    return  # a notebook that opens no run has nothing to override
  source = '# Injected by notebooks/execute.py\n' + '\n'.join(
      f'{name} = {value!r}' for name, value in parameters.items())
  cell = nbformat.v4.new_code_cell(source, metadata={'tags': ['injected-parameters']})
  notebook.cells.insert(tagged[0] + 1, cell)


def execute(name: str, out: str, parameters: dict, timeout: int = 1800) -> str:
  """Runs notebook ``name`` from the repository root; writes ``OUT/name.ipynb`` and ``.html``.

  Raises:
    CellExecutionError: a cell failed (the executed notebook is still written, up to the error).
  """
  notebook = nbformat.read(notebooks()[name], as_version=4)
  _inject(notebook, parameters)
  os.makedirs(out, exist_ok=True)
  target = os.path.join(out, f'{name}.ipynb')
  client = NotebookClient(notebook, timeout=timeout, kernel_name='python3',
                          resources={'metadata': {'path': REPO}})
  try:
    client.execute()
  finally:
    nbformat.write(notebook, target)
    html, _ = HTMLExporter().from_notebook_node(notebook)
    with open(os.path.join(out, f'{name}.html'), 'w', encoding='utf-8') as f:
      f.write(html)
  return target


def write_figure(notebook, path: str) -> bool:
  """The images of ``notebook``'s cells tagged 'figure', stacked top to bottom, into ``path``;
  False when it has none."""
  images = [Image.open(io.BytesIO(base64.b64decode(output['data']['image/png'])))
            for cell in notebook.cells if 'figure' in cell.get('metadata', {}).get('tags', [])
            for output in cell.get('outputs', []) if 'image/png' in output.get('data', {})]
  if not images:
    return False
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  canvas = Image.new('RGB', (max(i.width for i in images), sum(i.height for i in images)), 'white')
  top = 0
  for image in images:
    canvas.paste(image.convert('RGB'), (0, top))
    top += image.height
  canvas.save(path)
  return True


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n', 1)[0])
  parser.add_argument('names', nargs='*', help=f'notebooks to run (default all: '
                      f'{", ".join(notebooks())})')
  parser.add_argument('--runs', default='runs', help='where the runs live (RUNS)')
  parser.add_argument('--steps', type=int, default=0,
                      help='training steps for a missing run (STEPS; 0: the experiment\'s own)')
  parser.add_argument('--out', default=os.path.join('runs', 'notebooks'))
  parser.add_argument('--figures', default='',
                      help="also write each notebook's figure (its cells tagged 'figure') here")
  args = parser.parse_args()
  unknown = set(args.names) - set(notebooks())
  if unknown:
    parser.error(f'no notebook {sorted(unknown)}; there are {list(notebooks())}')
  out = os.path.abspath(args.out)
  parameters = {'RUNS': os.path.abspath(args.runs), 'STEPS': args.steps}
  for name in args.names or notebooks():
    start = time.time()
    try:
      target = execute(name, out, parameters)
    except CellExecutionError as error:
      print(f'{name}: FAILED; the executed part is in {out}/{name}.ipynb\n{error}', file=sys.stderr)
      return 1
    print(f'{name}: {time.time() - start:.0f} s -> {target} (and .html)', flush=True)
    figure = os.path.join(args.figures, f'{name}.png')
    if args.figures and write_figure(nbformat.read(target, as_version=4), figure):
      print(f'{name}: figure -> {figure}', flush=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
