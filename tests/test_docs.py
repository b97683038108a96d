"""README.md and docs/ point at things that exist: every relative link, every repository path
they name, and every figure, which the notebooks' tagged cells draw (`notebooks/execute.py
--figures`)."""

import glob
import os
import re

import nbformat
import pytest

from cnn_jax import generated
from cnn_jax.models import table
from tests.test_train import REPO

PAGES = ['README.md', *sorted(os.path.relpath(p, REPO)
                              for p in glob.glob(os.path.join(REPO, 'docs', '*.md')))]
ROOTS = ('cnn_jax', 'experiments', 'benchmarks', 'tests', 'notebooks', 'docs')


def _text(page: str) -> str:
  return open(os.path.join(REPO, page), encoding='utf-8').read()


@pytest.mark.parametrize('page', PAGES)
def test_every_relative_link_and_named_path_exists(page):
  text, folder = _text(page), os.path.dirname(os.path.join(REPO, page))
  links = [m.group(1) for m in re.finditer(r'\]\(([^)#\s]+)(?:#[^)]*)?\)', text)
           if '://' not in m.group(1)]
  missing = [link for link in links if not os.path.exists(os.path.join(folder, link))]
  # `cnn_jax/train/loop.py` and the like; placeholders (`experiments/NAME.py`, `runs/<time>`) aside.
  paths = [m.group(1) for m in re.finditer(rf'`((?:{"|".join(ROOTS)})/[\w./-]+)`', text)
           if not re.search(r'[A-Z]{2,}|<', m.group(1))]
  missing += [path for path in paths if not os.path.exists(os.path.join(REPO, path))]
  assert not missing, (page, missing)


def test_every_figure_shown_is_drawn_by_a_notebook():
  tagged = set()
  for path in glob.glob(os.path.join(REPO, 'notebooks', '*.ipynb')):
    notebook = nbformat.read(path, as_version=4)
    if any('figure' in c.get('metadata', {}).get('tags', []) for c in notebook.cells):
      tagged.add(os.path.splitext(os.path.basename(path))[0] + '.png')
  shown = {os.path.basename(m.group(1)) for page in PAGES
           for m in re.finditer(r'!\[[^\]]*\]\(([^)]+\.png)\)', _text(page))}
  assert shown and shown <= tagged, shown - tagged
  stored = set(os.listdir(os.path.join(REPO, 'docs', 'figures')))
  assert shown == stored, stored ^ shown  # nothing stale, nothing missing


@pytest.mark.slow
def test_the_zoo_table_is_the_one_the_registry_generates():
  text = _text(os.path.join('docs', 'models.md'))
  assert generated.stored(text, table.BEGIN, table.END) == table.markdown(), (
      'stale: run ./launch.sh models --table docs/models.md')


def test_the_benchmark_tables_are_the_ones_their_json_generates():
  from benchmarks import tables  # pylint: disable=g-import-not-at-top
  found = 0
  for path in tables.documents():
    text = _text(os.path.relpath(path, REPO))
    for begin in tables.markers(text):
      found += 1
      assert generated.stored(text, begin, tables.END) == tables.section(begin), (
          f'stale: run ./launch.sh bench --tables ({begin})')
  assert found >= 8  # CPU and GPU train steps, CPU families, max pool, pipelines, JPEGs on both,
  # compile cache


def test_the_cpu_families_table_has_a_row_per_family_latest_first():
  from benchmarks import tables  # pylint: disable=g-import-not-at-top

  def result(date, extensions, ratios):
    return {'date': date, 'machine': {'cpu': {'model': 'AMD EPYC', 'extensions': extensions},
                                      'cpu_count': 2},
            'train_step': [{'model': m, 'ratio_best_to_best': r} for m, r in ratios.items()]}

  lines = tables.cpu_families([
      result('2026-12-06', ['avx2', 'avx512f'], {'lenet5': {'float32': 0.98, 'bfloat16': 0.36},
                                                  'resnet18_cifar': {'float32': 0.931}}),
      result('2026-12-07', ['avx2'], {'lenet5': {'float32': 1.02}})])
  assert lines[0] == ('| CPU (extensions) | cores | date | `lenet5`, float32 / bfloat16 | '
                      '`resnet18_cifar`, float32 / bfloat16 |')
  assert lines[2:] == ['| AMD EPYC (avx2) | 2 | 2026-12-07 | 1.02x / - | - / - |',
                       '| AMD EPYC (avx2, avx512f) | 2 | 2026-12-06 | 0.98x / 0.36x | 0.93x / - |']
  marker = next(m for m in tables.markers(_text('README.md')) if '(cpu_families)' in m)
  families = glob.glob(os.path.join(REPO, 'benchmarks', 'results', 'cpu_train_step*.json'))
  assert len(tables.section(marker).splitlines()) == 5 + len(families) >= 7  # two or more


def test_a_benchmark_table_says_which_cpu_family_it_was_measured_on():
  from benchmarks import tables  # pylint: disable=g-import-not-at-top
  from cnn_jax import host  # pylint: disable=g-import-not-at-top
  line = tables.machine({'date': '2026-12-05', 'machine': {
      'backend': 'cpu', 'cpu': host.cpu(), 'cpu_count': 2, 'jax': '0.10.2',
      'matmul_size': 2048, 'matmul_gflops': {'float32': 180.6}}})
  assert line.startswith('*2026-12-05; ') and f'{host.cpu()["model"]} (' in line
  assert '2 cores' in line and '181 GFLOP/s (float32)' in line
