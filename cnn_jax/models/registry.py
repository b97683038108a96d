"""The model registry: each architecture registers itself in its own file, beside its definition.

``@register_model('my_net', input_shape=(28, 28, 1))`` on a class (or
``register_model(name, build, ...)`` for a partial) adds it under a name that `get_model`, configs
and ``./launch.sh models`` accept. A model with a torchvision twin also records how its weights
convert (`Torchvision`), so that ``load_pretrained(name, path)`` takes torchvision's file.
"""

import dataclasses
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable, Mapping

from cnn_jax.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class Preprocessing:
  """What a pretrained network expects of a raw RGB image in [0, 1]: resize the shorter side to
  ``resize``, take the centre ``crop`` square, subtract ``mean`` and divide by ``std``."""
  resize: int = 256
  crop: int = 224
  interpolation: str = 'bilinear'
  mean: tuple[float, ...] = IMAGENET_MEAN
  std: tuple[float, ...] = IMAGENET_STD


@dataclasses.dataclass(frozen=True)
class Weights:
  """One published torchvision weights file and its ImageNet-1K top-1 accuracy."""
  file: str
  top1: float
  preprocessing: Preprocessing = Preprocessing()

  @property
  def url(self) -> str:
    return f'https://download.pytorch.org/models/{self.file}'


@dataclasses.dataclass(frozen=True)
class Torchvision:
  """How torchvision's weights of the same name load into this zoo model.

  Attributes:
    weights: the published files, the default (first) one's preprocessing applies to any other.
    overrides: model fields that make ours compute exactly what torchvision's does.
    note: why, in one line, when there are overrides.
    skip: prefixes of torchvision tensors with no place in ours (e.g. heads dropped after training).
    order: torchvision's module names in the order its forward pass uses them, where that is not
      alphabetical (numbered children need no entry); see `cnn_jax.models.pretrained`.
    flattened: torchvision's linear layers that read a flattened [C, H, W] feature map (ours
      flatten [H, W, C]).
  """
  weights: tuple[Weights, ...]
  overrides: Mapping = dataclasses.field(default_factory=dict)
  note: str = ''
  skip: tuple[str, ...] = ()
  order: tuple[str, ...] = ('features', 'classifier')
  flattened: tuple[str, ...] = ()

  def preprocessing(self, path: str | None = None) -> Preprocessing:
    """The preprocessing of the file at ``path`` if it is a known one, else the default's."""
    name = os.path.basename(path or '')
    return next((w.preprocessing for w in self.weights if w.file == name),
                self.weights[0].preprocessing)


@dataclasses.dataclass(frozen=True)
class Entry:
  build: Callable
  input_shape: tuple[int, ...] | None  # one example, [*spatial, C]; None if not registered
  family: str
  torchvision: Torchvision | None = None
  classes: int = 1000  # of the dataset it was published on (the zoo table counts with it)


_REGISTRY: dict[str, Entry] = {}


def register_model(name: str, build: Callable | None = None,
                   input_shape: tuple[int, ...] | None = None, family: str | None = None,
                   torchvision: Torchvision | None = None, classes: int = 1000):
  """Adds ``build`` (a flax Module class, or any callable returning a module) under ``name``.

  ``input_shape`` is one example's native input, [*spatial, C]; ``classes`` the class count of
  the data it was published on (ImageNet's by default). Also a decorator::

    @register_model('my_net', input_shape=(28, 28, 1))
    class MyNet(nn.Module): ...

  Returns ``build``. Re-registering a name replaces it (a notebook cell run twice).
  """
  if build is None:
    return lambda build: register_model(name, build, input_shape, family, torchvision, classes)
  _REGISTRY[name] = Entry(build, tuple(input_shape) if input_shape else None, family or name,
                          torchvision, classes)
  return build


def image(size: int, channels: int = 3) -> tuple[int, ...]:
  """A square image's native input shape."""
  return (size, size, channels)


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


def entry(name: str) -> Entry:
  """The registration of ``name`` (registered, or 'module:attribute' / 'file.py:attribute')."""
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
  registered = [e for e in _REGISTRY.values() if e.build is build]
  return registered[0] if registered else Entry(build, None, attribute)


def get_model(name: str, **overrides):
  """Builds the model ``name`` (registered, or 'module:attribute') with its fields overridden by
  ``overrides``."""
  return entry(name).build(**overrides)


def input_shape(name: str) -> tuple[int, ...] | None:
  """The native input of ``name``, one example: [*spatial, C]; None if it was not registered."""
  return entry(name).input_shape


def family(name: str) -> str:
  """The architecture family ``name`` belongs to (e.g. 'resnet' for 'plain56')."""
  return entry(name).family
