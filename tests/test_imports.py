"""The package's modules import each other without a cycle: what a module imports (at its top or
inside a function), followed through the package, never leads back to it."""

import ast
import os

from tests.test_train import REPO

PACKAGE = os.path.join(REPO, 'cnn_jax')


def _modules() -> dict[str, str]:
  """``{dotted name: path}`` of every module of the package (a package as its __init__)."""
  found = {}
  for root, _, files in os.walk(PACKAGE):
    for name in files:
      if name.endswith('.py'):
        parts = os.path.relpath(os.path.join(root, name), REPO)[:-3].split(os.sep)
        found['.'.join(parts[:-1] if parts[-1] == '__init__' else parts)] = os.path.join(root, name)
  return found


def _imports(path: str, modules: dict[str, str]) -> set[str]:
  """The package's modules ``path`` imports anywhere in it (names of a package's __init__ that
  are not submodules count as the package)."""
  edges = set()
  for node in ast.walk(ast.parse(open(path, encoding='utf-8').read())):
    if isinstance(node, ast.Import):
      edges |= {a.name for a in node.names if a.name in modules}
    elif isinstance(node, ast.ImportFrom) and node.module and node.module in modules:
      for alias in node.names:
        submodule = f'{node.module}.{alias.name}'
        edges.add(submodule if submodule in modules else node.module)
  return edges


def test_no_module_of_the_package_imports_itself_back():
  modules = _modules()
  graph = {name: _imports(path, modules) for name, path in modules.items()}
  assert 'cnn_jax.arithmetic.summary' in graph and 'cnn_jax.layers.convolve' in graph
  assert not graph['cnn_jax.arithmetic.formulas']  # the closed-form rules stand alone
  cycles = []

  def visit(name, trail):
    for child in sorted(graph[name]):
      if child in trail:
        cycles.append(trail[trail.index(child):] + [child])
      elif child not in done:
        visit(child, trail + [child])
    done.add(name)

  done = set()
  for name in sorted(graph):
    if name not in done:
      visit(name, [name])
  assert not cycles, cycles
