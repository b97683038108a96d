"""README.md and docs/ point at things that exist: every relative link, every repository path
they name, and every figure, which the notebooks' tagged cells draw (`notebooks/execute.py
--figures`)."""

import glob
import os
import re

import nbformat
import pytest

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
  stored = table.BEGIN + text.split(table.BEGIN, 1)[1].split(table.END, 1)[0] + table.END
  assert stored == table.markdown(), 'stale: run ./launch.sh models --table docs/models.md'
