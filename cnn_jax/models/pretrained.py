"""Pretrained weights from torchvision (and any file with torchvision's tensor names) into the zoo.

``model, variables = load_pretrained('resnet50', 'resnet50-0676ba61.pth')`` builds the zoo model
in the variant that computes what torchvision's does (`registry.Torchvision.overrides`) and fills
its parameters and BatchNorm statistics from the file. A ``.pth`` is read with
``torch.load(weights_only=True)`` (torch installed: the ``[torch]`` extra), which refuses pickles
that would run code; a ``.safetensors`` file needs no torch.

The mapping is by rule, not by a table per model: torchvision's modules (convolutions, linear
layers, norms, learned scales), ordered by their names as the family's `order` ranks them, pair
one to one with the zoo model's layers in the order its forward pass creates them. Each pair
converts by layout (convolution kernels OIHW -> HWIO, linear weights transposed, a linear layer
after a flattened feature map re-ordered from CHW to HWC, running statistics into
``batch_stats``) and must agree in shape; the first tensor that does not is named in the error.
"""

import dataclasses
import os
import re
from collections.abc import Mapping

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from cnn_jax.errors import ConfigError
from cnn_jax.models import registry

# torchvision tensor names per module kind; BatchNorm also has a step counter we drop.
_BATCH_NORM = {'weight': ('params', 'scale'), 'bias': ('params', 'bias'),
               'running_mean': ('batch_stats', 'mean'), 'running_var': ('batch_stats', 'var')}
_AFFINE = {'weight': ('params', 'scale'), 'bias': ('params', 'bias')}
_WEIGHTED = {'weight': ('params', 'kernel'), 'bias': ('params', 'bias')}
_IGNORED = ('num_batches_tracked',)


def read_state_dict(path: str) -> dict[str, np.ndarray]:
  """The tensors of a torchvision ``.pth`` / ``.pt`` / ``.bin`` or a ``.safetensors`` file."""
  if not os.path.isfile(path):
    raise ConfigError(f'Pretrained weights {path!r}: no such file. Download it first (see '
                      'docs/pretrained.md for each file\'s address).')
  if path.endswith('.safetensors'):
    from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
    return load_file(path)
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as error:
    raise ConfigError(f'Reading {path!r} needs PyTorch: pip install -e ".[torch]", or convert '
                      'the file to .safetensors elsewhere.') from error
  try:
    state = torch.load(path, map_location='cpu', weights_only=True)
  except Exception as error:  # torch raises UnpicklingError and RuntimeError for bad files
    raise ConfigError(f'Pretrained weights {path!r} cannot be read as tensors only '
                      f'(weights_only=True refuses anything else, code included): '
                      f'{str(error).splitlines()[0]}') from error
  for key in ('state_dict', 'model'):  # training checkpoints nest the weights
    if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
      state = state[key]
  if not isinstance(state, Mapping):
    raise ConfigError(f'Pretrained weights {path!r} hold a {type(state).__name__}, not a state '
                      'dict of tensors.')
  return {name: tensor.detach().float().numpy() for name, tensor in state.items()
          if hasattr(tensor, 'numpy')}


@dataclasses.dataclass
class _Slot:
  """One layer's tensors: a torchvision module prefix or a zoo model's module path."""
  name: str
  tensors: dict


def _sort_key(name: str, order: tuple[str, ...]):
  """Orders module names as torchvision registers them: numbers numerically, names by their rank
  in ``order`` (the full name, else its letters), then alphabetically."""
  key = []
  for part in name.split('.'):
    if part.isdigit():
      key.append((0, int(part), 0, ''))
      continue
    stem, number, rest = re.fullmatch(r'(\D*)(\d*)(.*)', part).groups()
    rank = order.index(part) if part in order else (
        order.index(stem) if stem in order else len(order))
    key.append((1, rank, int(number) if number else -1, stem + rest))
  return key


def _torch_slots(state: dict[str, np.ndarray], spec: registry.Torchvision) -> list[_Slot]:
  modules: dict[str, dict] = {}
  for name, tensor in state.items():
    if name.startswith(spec.skip):
      continue
    prefix, _, leaf = name.rpartition('.')
    if leaf not in _IGNORED:
      modules.setdefault(prefix, {})[leaf] = tensor
  ordered = sorted(modules, key=lambda prefix: _sort_key(prefix, spec.order))
  return [_Slot(prefix, modules[prefix]) for prefix in ordered]


def layers(model: nn.Module, input_shape: tuple[int, ...]) -> list[_Slot]:
  """The modules of ``model`` that own variables, in the order its forward pass first calls them
  on one input of ``input_shape`` ([*spatial, C]), each with its abstract variables keyed by
  ``(collection, name)``. Nothing is computed or allocated."""
  paths = {}  # first calls, in order

  def record(next_fun, args, kwargs, context):
    paths.setdefault(context.module.path)
    return next_fun(*args, **kwargs)

  def init(x):
    with nn.intercept_methods(record):
      return model.init(jax.random.key(0), x)

  variables = jax.eval_shape(init, jax.ShapeDtypeStruct((1, *input_shape), jnp.float32))
  slots = []
  for path in paths:
    own = {}
    for collection in ('params', 'batch_stats'):
      node = _lookup(variables.get(collection, {}), path)
      if isinstance(node, Mapping):
        own.update({(collection, key): leaf for key, leaf in node.items()
                    if not isinstance(leaf, Mapping)})
    if own:
      slots.append(_Slot('/'.join(path), own))
  return slots


def _lookup(tree, path):
  for part in path:
    tree = tree.get(part) if isinstance(tree, Mapping) else None
    if tree is None:
      return None
  return tree


def _convert(torch_slot: _Slot, flax_slot: _Slot, flattened: tuple[str, ...],
             channels: int | None) -> dict:
  """``{(collection, name): array}`` for ``flax_slot`` from ``torch_slot``'s tensors; a linear
  layer named in ``flattened`` reads a flattened map of ``channels``."""
  tensors = torch_slot.tensors
  targets = set(flax_slot.tensors)
  if 'running_mean' in tensors:
    names = _BATCH_NORM
  elif ('params', 'kernel') in targets:
    names = _WEIGHTED
  elif ('params', 'scale') in targets:
    names = _AFFINE
  else:  # a module's own learned tensors (a layer scale): same names on both sides
    names = {name: ('params', name) for name in tensors}
  out = {}
  for name, tensor in tensors.items():
    target = names.get(name)
    if target not in flax_slot.tensors:
      raise _misplaced(f'{torch_slot.name}.{name}', tensor.shape, flax_slot, target)
    want = tuple(flax_slot.tensors[target].shape)
    value = tensor
    if target[1] == 'kernel':
      if tensor.ndim > 2 and len(want) == 2:  # a 1x1 convolution as a dense layer
        value = tensor.reshape(tensor.shape[:2])
      if torch_slot.name in flattened and value.shape[1] % channels == 0:
        # A linear layer on a flattened [C, H, W] map reads ours flattened as [H, W, C].
        out_features = value.shape[0]
        value = value.reshape(out_features, channels, -1).transpose(0, 2, 1)
        value = value.reshape(out_features, -1)
      value = np.moveaxis(value, (0, 1), (-1, -2)) if value.ndim > 2 else value.T
    elif value.size == int(np.prod(want)):  # e.g. a layer scale stored as [C, 1, 1]
      value = value.reshape(want)
    if tuple(value.shape) != want:
      raise _misplaced(f'{torch_slot.name}.{name}', tensor.shape, flax_slot, target)
    out[target] = value
  missing = targets - set(out)
  if missing:
    raise ConfigError(f'The file has no tensor for {flax_slot.name}/{sorted(missing)[0][1]} '
                      f'(torchvision module {torch_slot.name!r} has {sorted(tensors)}).')
  return out


def _misplaced(tensor: str, shape, flax_slot: _Slot, target) -> ConfigError:
  want = {key[1]: tuple(leaf.shape) for key, leaf in flax_slot.tensors.items()}
  return ConfigError(f'Tensor {tensor} {tuple(shape)} has no place in the model: it meets layer '
                     f'{flax_slot.name} {want}' + ('' if target is None else
                                                    f', whose {target[1]} differs') +
                     '; is the file for this model (and this variant of it)?')


def _set(tree: dict, path: tuple[str, ...], value) -> None:
  for part in path[:-1]:
    tree = tree.setdefault(part, {})
  tree[path[-1]] = value


def _converted(model: nn.Module, state: dict[str, np.ndarray], spec: registry.Torchvision,
               input_shape: tuple[int, ...]):
  """Yields ``(layer path, {(collection, name): array})`` for each layer of ``model`` the file
  fills, in forward order; the model's last layer is left out when the file's classifier has
  another number of classes. Raises `ConfigError` at the first tensor with no place."""
  flax_slots = layers(model, input_shape)
  torch_slots = _torch_slots(state, spec)
  if _classes(torch_slots) not in (None, model.num_classes):
    flax_slots, torch_slots = flax_slots[:-1], torch_slots[:-1]
  channels = None
  for torch_slot, flax_slot in zip(torch_slots, flax_slots):
    converted = _convert(torch_slot, flax_slot, spec.flattened, channels)
    yield flax_slot.name, converted
    # The channels of the map a linear layer right after this one would read flattened.
    kernel = converted.get(('params', 'kernel'))
    if kernel is not None and kernel.ndim > 2:
      channels = kernel.shape[-1]
    elif ('params', 'scale') in converted:
      channels = converted[('params', 'scale')].shape[-1]
  if len(torch_slots) > len(flax_slots):
    extra = torch_slots[len(flax_slots)]
    raise ConfigError(f'Tensor {extra.name}.{next(iter(extra.tensors))} has no place in the '
                      f'model: it has {len(flax_slots)} layers, the file {len(torch_slots)}.')
  if len(flax_slots) > len(torch_slots):
    raise ConfigError(f'The file has no tensor for layer {flax_slots[len(torch_slots)].name}: it '
                      f'has {len(torch_slots)} layers, the model {len(flax_slots)}.')


def convert(model: nn.Module, state: dict[str, np.ndarray], spec: registry.Torchvision,
            input_shape: tuple[int, ...]) -> dict:
  """The variables of ``model`` from torchvision tensors ``state``; when the file's classifier
  has another number of classes than ``model``, the model's last layer is left out."""
  variables: dict = {}
  for name, converted in _converted(model, state, spec, input_shape):
    for (collection, leaf), value in converted.items():
      _set(variables.setdefault(collection, {}), (*name.split('/'), leaf),
           jnp.asarray(value, jnp.float32))
  return variables


def _classes(torch_slots: list[_Slot]) -> int | None:
  """The outputs of the file's classifier (its last module, a linear layer); None if it has none."""
  weight = torch_slots[-1].tensors.get('weight') if torch_slots else None
  return int(weight.shape[0]) if weight is not None and weight.ndim == 2 else None


def overlay(fresh: dict, given: dict) -> tuple[dict, int, list[str]]:
  """``(variables, taken, kept)``: ``fresh`` with every leaf that ``given`` has at the same path
  and shape replaced by it (cast to the fresh leaf's dtype and placement); ``kept`` names the
  leaves left fresh."""
  given = flax.traverse_util.flatten_dict(given, sep='/')
  flat = flax.traverse_util.flatten_dict(fresh, sep='/')
  taken, kept = 0, []
  for path, leaf in flat.items():
    value = given.get(path)
    if value is not None and tuple(value.shape) == tuple(leaf.shape):
      flat[path] = jax.device_put(jnp.asarray(value, leaf.dtype), getattr(leaf, 'sharding', None))
      taken += 1
    else:
      kept.append(path)
  return flax.traverse_util.unflatten_dict(flat, sep='/'), taken, kept


def load_pretrained(name: str, path: str, num_classes: int | None = None, **overrides):
  """``(model, variables)``: zoo model ``name`` (torchvision's name) with the weights in ``path``.

  ``num_classes``: None keeps the file's classifier; another number re-initialises the head.
  ``overrides``: further model fields (``dtype``, ``drop_rate``...).
  """
  entry = registry.entry(name)
  spec = entry.torchvision
  if spec is None:
    convertible = [n for n in registry.list_models() if registry.entry(n).torchvision]
    raise ConfigError(f'Model {name!r} has no torchvision twin to load weights from; models that '
                      f'do: {", ".join(convertible)}.')
  state = read_state_dict(path)
  file_classes = _classes(_torch_slots(state, spec))
  if not (num_classes or file_classes):
    raise ConfigError(f'{path!r} has no classifier (its last tensors are not a linear layer): '
                      'pass num_classes.')
  num_classes = num_classes or file_classes
  model = registry.get_model(name, num_classes=num_classes, **{**spec.overrides, **overrides})
  if spec.note:
    logging.info('%s: built with %s', name, spec.note)
  fresh_head = file_classes is not None and num_classes != file_classes
  if fresh_head:
    logging.warning('%s: the file classifies %d classes; the head for %d is freshly initialised.',
                    name, file_classes, num_classes)
  crop = spec.preprocessing(path).crop
  variables = convert(model, state, spec, (crop, crop, 3))
  if fresh_head:
    initial = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, crop, crop, 3)))
    variables, _, _ = overlay(initial, variables)
  return model, variables
