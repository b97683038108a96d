"""Architectures, registered by name: ``get_model(name, num_classes=..., **overrides)``."""

import functools

from cnn_jax.models.lenet import LeNet5
from cnn_jax.models.resnet import ResNet, ResNet18, ResNet34, ResNet50
from cnn_jax.models.simple import SimpleCNN

_REGISTRY = {
    'simple_cnn': SimpleCNN,
    'lenet5': LeNet5,
    'resnet18': ResNet18,
    'resnet34': ResNet34,
    'resnet50': ResNet50,
    'resnet18_cifar': functools.partial(ResNet18, stem='cifar'),
}


def list_models() -> list[str]:
  """Names accepted by `get_model`."""
  return sorted(_REGISTRY)


def get_model(name: str, **overrides):
  """Builds the registered model ``name`` with its fields overridden by ``overrides``."""
  if name not in _REGISTRY:
    raise ValueError(f'Unknown model {name!r}; registered models: {", ".join(list_models())}.')
  return _REGISTRY[name](**overrides)
