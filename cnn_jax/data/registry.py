"""Our own datasets by name, registered beside their builders: ``@register_dataset('name')`` on a
TFDS builder class, in a module that is imported before the run starts (``cnn_jax.data`` imports
ours; an experiment file imports yours). A registered dataset is prepared on first use, as
array_record files under ``config.data.data_dir``; any other name is looked up in the TFDS
catalogue."""

from collections.abc import Callable

# Fields of ``config.data`` a builder may take as keyword arguments (`register_dataset`).
OPTIONS = ('folder', 'holdout_fraction')

_DATASETS: dict[str, Callable] = {}


def register_dataset(name: str, options: tuple[str, ...] = ()) -> Callable:
  """Registers the decorated TFDS builder class as dataset ``name``; its constructor also gets
  the ``options`` (of `OPTIONS`) from ``config.data``, as keyword arguments."""
  unknown = set(options) - set(OPTIONS)
  assert not unknown, f'{name}: options {sorted(unknown)} are not among {OPTIONS}'

  def add(builder: type) -> type:
    _DATASETS[name] = lambda data_dir, **given: builder(
        data_dir=data_dir, file_format='array_record', **{k: given[k] for k in options})
    return builder

  return add


def maker(name: str) -> Callable | None:
  """``make(data_dir, **options) -> builder`` of registered dataset ``name``; None otherwise."""
  return _DATASETS.get(name)


def names() -> list[str]:
  return sorted(_DATASETS)
