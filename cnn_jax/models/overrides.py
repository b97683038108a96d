"""A model's fields as the command line sets them (``--config.model.kwargs.FIELD=VALUE``): their
types and defaults, values coerced to them, and `describe` (``./launch.sh models NAME``)."""

import dataclasses
import types
import typing
from typing import Any

from cnn_jax.errors import ConfigError
from cnn_jax.models.contract import build
from cnn_jax.models.registry import family, input_shape, list_models


@dataclasses.dataclass(frozen=True)
class FieldInfo:
  type: Any
  default: Any


def fields(name: str) -> dict[str, FieldInfo]:
  """The fields of model ``name`` a config may set (all but ``num_classes``), with the defaults
  its registration gives them."""
  model = build(name, 2)
  hints = typing.get_type_hints(type(model))
  return {f.name: FieldInfo(hints.get(f.name, Any), getattr(model, f.name))
          for f in dataclasses.fields(model)
          if f.init and f.name not in ('num_classes', 'parent', 'name')}


def _coerce(value, hint, field: str):
  """``value`` as the field's annotated type: the command line gives ints for floats and lists
  for tuples."""
  origin = typing.get_origin(hint)
  options = typing.get_args(hint) if origin in (typing.Union, types.UnionType) else ()
  if options:
    if value is None and type(None) in options:
      return None
    hint = next(o for o in options if o is not type(None))
    origin = typing.get_origin(hint)
  if hint is float and isinstance(value, int) and not isinstance(value, bool):
    return float(value)
  if origin is tuple or hint is tuple:
    items = [a for a in typing.get_args(hint) if a is not Ellipsis]
    if not isinstance(value, (list, tuple)) or any(
        t in (int, float, bool, str) and not isinstance(v, t) and not (t is float and
                                                                       isinstance(v, int))
        for v, t in zip(value, items * len(value) if len(items) == 1 else items)):
      raise ConfigError(f'config.model.kwargs.{field}={value!r}: expected {hint}, written like '
                        '(32, 64).')
    return tuple(float(v) if float in items and isinstance(v, int) else v for v in value)
  if hint in (int, float, bool, str) and (not isinstance(value, hint) or
                                          (hint is int and isinstance(value, bool))):
    raise ConfigError(f'config.model.kwargs.{field}={value!r}: expected {hint.__name__}.')
  return value


def resolve_kwargs(name: str, kwargs: dict, overrides: dict) -> tuple[dict, list[str]]:
  """``(kwargs, dropped)``: the experiment's ``kwargs`` updated by ``overrides`` (the command
  line's ``--config.model.kwargs.FIELD=VALUE``), each converted to the field's type.

  An override naming no field of the model is an error; an experiment kwarg the model does not
  have (the experiment was written for another model) is dropped and named in ``dropped``.
  """
  known = fields(name)
  unknown = sorted(set(overrides) - set(known))
  if unknown:
    raise ConfigError(f'Model {name!r} has no field {", ".join(unknown)}; its fields are '
                      f'{", ".join(known)} (see ./launch.sh models {name}).')
  dropped = sorted(set(kwargs) - set(known))
  merged = {k: v for k, v in kwargs.items() if k in known}
  merged.update(overrides)
  return {k: _coerce(v, known[k].type, k) for k, v in merged.items()}, dropped


def describe(name: str | None = None) -> str:
  """The registered models by family, or one model's fields, defaults and native input."""
  if name is None:
    by_family: dict[str, list[str]] = {}
    for model in list_models():
      by_family.setdefault(family(model), []).append(model)
    lines = [f'{fam}: {", ".join(names)}' for fam, names in sorted(by_family.items())]
    return '\n'.join(lines + ['', 'One model: ./launch.sh models NAME (or models.describe(NAME)).'])
  shape = input_shape(name)
  model_type = type(build(name, 2))
  lines = [f'{name}: {model_type.__module__}.{model_type.__qualname__}, family {family(name)}',
           'native input: ' + ('x'.join(map(str, shape)) if shape else 'not registered'),
           'fields (set with --config.model.kwargs.FIELD=VALUE):']
  for field, info in fields(name).items():
    hint = getattr(info.type, '__name__', None) if not typing.get_args(info.type) else None
    lines.append(f'  {field}: {hint or info.type} = {info.default!r}')
  return '\n'.join(lines)
