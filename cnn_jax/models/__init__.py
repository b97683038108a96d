"""Architectures, registered by name: ``get_model(name, num_classes=..., **overrides)``.

Every entry also records its native input (one example's shape), ``input_shape(name)``.
"""

import dataclasses
import functools
from collections.abc import Callable

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
  input_shape: tuple[int, ...]  # one example, [*spatial, C]
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


def list_models() -> list[str]:
  """Names accepted by `get_model`."""
  return sorted(_REGISTRY)


def _entry(name: str) -> Entry:
  if name not in _REGISTRY:
    raise ValueError(f'Unknown model {name!r}; registered models: {", ".join(list_models())}.')
  return _REGISTRY[name]


def get_model(name: str, **overrides):
  """Builds the registered model ``name`` with its fields overridden by ``overrides``."""
  return _entry(name).build(**overrides)


def input_shape(name: str) -> tuple[int, ...]:
  """The native input of ``name``, one example: [*spatial, C]."""
  return _entry(name).input_shape


def family(name: str) -> str:
  """The architecture family ``name`` belongs to (e.g. 'resnet' for 'plain56')."""
  return _entry(name).family
