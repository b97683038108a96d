"""Architectures, registered by name: ``get_model(name, num_classes=..., **overrides)``.

Every entry also records its native input (one example's shape), ``input_shape(name)``.

Your own model: `register_model` it, or name it by import path (``'my_pkg.nets:MyNet'``) or by
file (``'path/to/nets.py:MyNet'``) wherever a registered name
is accepted. The contract every model meets (checked by `check_contract`):

* the constructor takes ``num_classes`` (the output features; per pixel for dense prediction);
* ``__call__(x, train)``: ``x`` is [N, *spatial, C]; ``train`` switches dropout and BatchNorm;
  it returns logits, or ``(logits, *aux_logits)`` in training (auxiliary heads, weighted by
  ``config.aux_loss_weight``);
* an ``axis_name`` field, passed to every BatchNorm, if the model has BatchNorm: the 'pmap'
  mode sets it so the statistics are averaged over the devices;
* a ``dtype`` field, passed to every layer, for ``config.compute_dtype`` other than float32.
"""

import dataclasses
import functools
import importlib
import importlib.util
import inspect
import os
import sys
import types
import typing
from collections.abc import Callable
from typing import Any

import flax.linen as nn

from cnn_jax.errors import ConfigError

from cnn_jax.models import resnet
from cnn_jax.models.alexnet import AlexNet
from cnn_jax.models.context import DilatedContextNet
from cnn_jax.models.deepbind import DeepBind
from cnn_jax.models.densenet import densenet
from cnn_jax.models.efficientnet import SCALING, efficientnet
from cnn_jax.models.fcn import FCN
from cnn_jax.models.googlenet import GoogLeNet
from cnn_jax.models.lenet import LeNet5
from cnn_jax.models.mobilenet import MobileNetV1
from cnn_jax.models.segnet import SegNet
from cnn_jax.models.simple import SimpleCNN
from cnn_jax.models.unet import UNet
from cnn_jax.models.vgg import DEPTHS as VGG_DEPTHS
from cnn_jax.models.vgg import VGG
from cnn_jax.models.wavenet import WaveNet


@dataclasses.dataclass(frozen=True)
class Entry:
  build: Callable
  input_shape: tuple[int, ...] | None  # one example, [*spatial, C]; None if not registered
  family: str


def _image(size: int, channels: int = 3) -> tuple[int, ...]:
  return (size, size, channels)


def _entries() -> dict[str, Entry]:
  entries = {
      'simple_cnn': Entry(SimpleCNN, _image(8, 1), 'simple'),
      'lenet5': Entry(LeNet5, _image(32, 1), 'lenet'),
      'alexnet': Entry(AlexNet, _image(227), 'alexnet'),
      'zfnet': Entry(functools.partial(AlexNet, variant='zfnet'), _image(224), 'alexnet'),
      'googlenet': Entry(GoogLeNet, _image(224), 'googlenet'),
      'mobilenet_v1': Entry(MobileNetV1, _image(224), 'mobilenet'),
      'resnet18_cifar': Entry(resnet.imagenet_resnet(18, stem='cifar'), _image(32), 'resnet'),
      # Dense prediction: per-pixel logits at the input resolution.
      'segnet': Entry(SegNet, _image(224), 'segnet'),
      'dilated_context': Entry(DilatedContextNet, _image(64), 'dilated_context'),
      'unet': Entry(UNet, _image(256, 1), 'unet'),
      # Sequences [T, C].
      'wavenet': Entry(WaveNet, (40, 1), 'wavenet'),
      'resnet1d': Entry(functools.partial(resnet.ResNet, stage_sizes=(2, 2, 2), width=32,
                                          stem='cifar', stem_kernel=7), (40, 1), 'resnet'),
      'deepbind': Entry(DeepBind, (101, 4), 'deepbind'),
  }
  for stride in (32, 16, 8):
    entries[f'fcn{stride}s'] = Entry(functools.partial(FCN, output_stride=stride), _image(224),
                                     'fcn')
  for depth in VGG_DEPTHS:
    entries[f'vgg{depth}'] = Entry(functools.partial(VGG, depth=depth), _image(224), 'vgg')
    entries[f'vgg{depth}_bn'] = Entry(functools.partial(VGG, depth=depth, batch_norm=True),
                                      _image(224), 'vgg')
  for depth in resnet.IMAGENET_DEPTHS:
    entries[f'resnet{depth}'] = Entry(resnet.imagenet_resnet(depth), _image(224), 'resnet')
    entries[f'plain{depth}'] = Entry(resnet.imagenet_resnet(depth, shortcut='none'), _image(224),
                                     'resnet')
  for depth in (18, 34):
    entries[f'preact_resnet{depth}'] = Entry(resnet.imagenet_resnet(depth, block='preact'),
                                             _image(224), 'resnet')
  for depth in resnet.CIFAR_DEPTHS:
    for prefix, kwargs in (('resnet', {}), ('plain', {'shortcut': 'none'}),
                           ('highway', {'shortcut': 'gated'}),
                           ('preact_resnet', {'block': 'preact', 'projection': 'conv'})):
      entries[f'{prefix}{depth}'] = Entry(resnet.cifar_resnet(depth, **kwargs), _image(32),
                                          'resnet')
  for depth in (121, 169, 201):
    entries[f'densenet{depth}'] = Entry(densenet(depth), _image(224), 'densenet')
  for variant, (_, _, resolution, _) in SCALING.items():
    entries[f'efficientnet_{variant}'] = Entry(efficientnet(variant), _image(resolution),
                                               'efficientnet')
  return entries


_REGISTRY = _entries()


def register_model(name: str, build: Callable | None = None,
                   input_shape: tuple[int, ...] | None = None, family: str | None = None):
  """Adds ``build`` (a flax Module class, or any callable returning a module) under ``name``.

  ``input_shape`` is one example's native input, [*spatial, C]. Also a decorator::

    @register_model('my_net', input_shape=(28, 28, 1))
    class MyNet(nn.Module): ...

  Returns ``build``. Re-registering a name replaces it (a notebook cell run twice).
  """
  if build is None:
    return lambda build: register_model(name, build, input_shape, family)
  _REGISTRY[name] = Entry(build, tuple(input_shape) if input_shape else None, family or name)
  return build


def list_models() -> list[str]:
  """Names accepted by `get_model`, besides import paths."""
  return sorted(_REGISTRY)


def _import(module_name: str):
  """A module by dotted name, or by the path of its .py file (imported once per path)."""
  if not module_name.endswith('.py'):
    return importlib.import_module(module_name)
  path = os.path.abspath(os.path.expanduser(module_name))
  key = f'cnn_jax_user_model_{abs(hash(path))}'
  if key not in sys.modules:
    spec = importlib.util.spec_from_file_location(key, path)
    if spec is None or not os.path.isfile(path):
      raise FileNotFoundError(f'no file {path}')
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module
    try:
      spec.loader.exec_module(module)
    except BaseException:
      del sys.modules[key]
      raise
  return sys.modules[key]


def _entry(name: str) -> Entry:
  if name in _REGISTRY:
    return _REGISTRY[name]
  if ':' not in name:
    raise ConfigError(f'Unknown model {name!r}: register it with models.register_model, name it '
                      "by import path ('my_pkg.my_module:MyNet' or 'path/to/file.py:MyNet'), "
                      f'or pick one of {", ".join(list_models())}.')
  module_name, _, attribute = name.rpartition(':')
  try:
    module = _import(module_name)
  except (ImportError, FileNotFoundError) as error:
    raise ConfigError(f'Model {name!r}: cannot import {module_name!r} ({error}); name a module '
                      'that is importable (installed, or its folder on PYTHONPATH) or a .py '
                      'file.') from error
  if not hasattr(module, attribute):
    raise ConfigError(f'Model {name!r}: module {module_name!r} has no {attribute!r}.')
  build = getattr(module, attribute)
  # Registered on import (decorator): keep its native input and family.
  registered = [entry for entry in _REGISTRY.values() if entry.build is build]
  return registered[0] if registered else Entry(build, None, attribute)


def get_model(name: str, **overrides):
  """Builds the model ``name`` (registered, or 'module:attribute') with its fields overridden by
  ``overrides``."""
  return _entry(name).build(**overrides)


def input_shape(name: str) -> tuple[int, ...] | None:
  """The native input of ``name``, one example: [*spatial, C]; None if it was not registered."""
  return _entry(name).input_shape


def family(name: str) -> str:
  """The architecture family ``name`` belongs to (e.g. 'resnet' for 'plain56')."""
  return _entry(name).family


def _build(name: str, num_classes: int, **kwargs) -> nn.Module:
  try:
    model = get_model(name, num_classes=num_classes, **kwargs)
  except TypeError as error:
    raise ConfigError(f'Model {name!r} could not be built with num_classes={num_classes} and '
                      f'{kwargs or "no other fields"}: {error}. A model\'s constructor takes '
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
  if (origin is tuple or hint is tuple) and isinstance(value, (list, tuple)):
    return tuple(value)
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
