"""The zoo table of docs/models.md, generated from the registry and the experiments:
``./launch.sh models --table docs/models.md`` rewrites it; a test fails when it is stale."""

import importlib
import pkgutil

import experiments
from cnn_jax import arithmetic, generated
from cnn_jax.models import registry

BEGIN = '<!-- The table below is generated: ./launch.sh models --table docs/models.md -->'
END = '<!-- End of the generated table. -->'
HEADER = ('| model | classes | params | GMACs | input | experiments |\n'
          '|---|---|---|---|---|---|')


def _experiments_by_model() -> dict[str, list[str]]:
  """``{model name: the shipped experiment files that train it}``."""
  used: dict[str, list[str]] = {}
  for info in pkgutil.iter_modules(experiments.__path__):
    if info.name == 'base':
      continue
    config = importlib.import_module(f'experiments.{info.name}').get_config()
    used.setdefault(config.model.name, []).append(f'{info.name}.py')
  return used


def row(name: str, used: dict[str, list[str]]) -> str:
  """One model's line: its published class count, parameters and multiply-adds of one example at
  its native input (`arithmetic.summarize`, from shapes alone), and the experiments using it."""
  entry = registry.entry(name)
  summary = arithmetic.summarize(registry.get_model(name, num_classes=entry.classes),
                                 (1, *entry.input_shape), print_fn=None, train=False)
  names = ', '.join(f'`{e}`' for e in sorted(used.get(name, []))) or '-'
  return (f'| `{name}` | {entry.classes} | {summary.total_params:,} | '
          f'{summary.total_macs / 1e9:.3f} | {"x".join(map(str, entry.input_shape))} | {names} |')


def markdown() -> str:
  """The table, between its markers."""
  used = _experiments_by_model()
  return '\n'.join([BEGIN, HEADER, *(row(name, used) for name in registry.list_models()), END])


def write(path: str) -> None:
  """Replaces the generated table in ``path`` (the markers and what lies between them)."""
  generated.replace(path, BEGIN, END, markdown())
