"""Architectures, registered by name: ``get_model(name, num_classes=..., **overrides)``.

Every entry also records its native input (one example's shape), ``input_shape(name)``.

Each architecture registers itself in its own file (`cnn_jax.models.registry`). Your own model:
`register_model` it (a decorator), or name it by import path (``'my_pkg.nets:MyNet'``) or by file
(``'path/to/nets.py:MyNet'``) wherever a registered name is accepted. The contract every model meets (checked by `check_contract`):

* the constructor takes ``num_classes`` (the output features; per pixel for dense prediction);
* ``__call__(x, train)``: ``x`` is [N, *spatial, C]; ``train`` switches dropout and BatchNorm;
  it returns logits, or ``(logits, *aux_logits)`` in training (auxiliary heads, weighted by
  ``config.aux_loss_weight``);
* an ``axis_name`` field, passed to every BatchNorm, if the model has BatchNorm: the 'pmap'
  mode sets it so the statistics are averaged over the devices;
* a ``dtype`` field, passed to every layer, for ``config.compute_dtype`` other than float32.
"""

import dataclasses
import inspect
import types
import typing
from typing import Any

import flax.linen as nn

from cnn_jax.errors import ConfigError
# Each model file registers its architectures on import.
from cnn_jax.models import (alexnet, context, convnext, deepbind, densenet, efficientnet, fcn,  # noqa: F401
                            googlenet, lenet, mobilenet, regnet, resnet, segnet, simple, unet, vgg,
                            wavenet)
from cnn_jax.models.pretrained import load_pretrained
from cnn_jax.models.registry import (Preprocessing, Torchvision, Weights, entry, family, get_model,
                                     input_shape, list_models, register_model)


def _build(name: str, num_classes: int, **kwargs) -> nn.Module:
  try:
    model = get_model(name, num_classes=num_classes, **kwargs)
  except TypeError as error:
    if 'num_classes' in str(error):
      raise ConfigError(f'Model {name!r} takes no num_classes ({error}): a run builds every model '
                        "with its dataset's class count. Add the field `num_classes: int` and end "
                        'the model with nn.Dense(self.num_classes) (per-pixel labels: a 1x1 '
                        'convolution to num_classes channels).') from error
    raise ConfigError(f'Model {name!r} could not be built with '
                      f'{kwargs or "only num_classes"}: {error}. A model\'s constructor takes '
                      'num_classes and has a default for every other field.') from error
  if not isinstance(model, nn.Module):
    raise ConfigError(f'Model {name!r} built a {type(model).__name__}, not a flax.linen.Module.')
  return model


@dataclasses.dataclass(frozen=True)
class FieldInfo:
  type: Any
  default: Any


def fields(name: str) -> dict[str, FieldInfo]:
  """The fields of model ``name`` a config may set (all but ``num_classes``), with the defaults
  its registration gives them."""
  model = _build(name, 2)
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


def check_contract(name: str, model: nn.Module, *, batch_norm_across_devices: bool = False,
                   needs_dtype: bool = False) -> None:
  """The module contract above, for what a run needs; raises ConfigError naming the fix.

  ``batch_norm_across_devices``: the model has BatchNorm and the run is per-device ('pmap').
  ``needs_dtype``: the run computes in another dtype than float32.
  """
  has = {f.name for f in dataclasses.fields(model)}
  if 'train' not in inspect.signature(type(model).__call__).parameters:
    raise ConfigError(f'Model {name!r}: __call__ must take a `train` argument (True in training: '
                      'dropout on, BatchNorm batch statistics); it takes '
                      f'{inspect.signature(type(model).__call__)}.')
  if batch_norm_across_devices and 'axis_name' not in has:
    raise ConfigError(f"Model {name!r} has BatchNorm but no `axis_name` field, so in "
                      "config.parallel.mode='pmap' each device would keep its own statistics. Add "
                      "`axis_name: str | None = None` and pass it to every nn.BatchNorm, or use "
                      "config.parallel.mode='jit'.")
  if needs_dtype and 'dtype' not in has:
    raise ConfigError(f'Model {name!r} has no `dtype` field, so config.compute_dtype cannot reach '
                      'its layers. Add `dtype: Any = None` and pass it to every layer, or set '
                      "config.compute_dtype='float32'.")


def describe(name: str | None = None) -> str:
  """The registered models by family, or one model's fields, defaults and native input."""
  if name is None:
    by_family: dict[str, list[str]] = {}
    for model in list_models():
      by_family.setdefault(family(model), []).append(model)
    lines = [f'{fam}: {", ".join(names)}' for fam, names in sorted(by_family.items())]
    return '\n'.join(lines + ['', 'One model: ./launch.sh models NAME (or models.describe(NAME)).'])
  shape = input_shape(name)
  model_type = type(_build(name, 2))
  lines = [f'{name}: {model_type.__module__}.{model_type.__qualname__}, family {family(name)}',
           'native input: ' + ('x'.join(map(str, shape)) if shape else 'not registered'),
           'fields (set with --config.model.kwargs.FIELD=VALUE):']
  for field, info in fields(name).items():
    hint = getattr(info.type, '__name__', None) if not typing.get_args(info.type) else None
    lines.append(f'  {field}: {hint or info.type} = {info.default!r}')
  return '\n'.join(lines)
