"""Where a fresh run's weights come from: ``config.init.from``.

Either a pretrained weights file (``.pth`` / ``.safetensors`` with torchvision's names, for a zoo
model with a torchvision twin) or another run: ``RUN_DIR``, ``RUN_DIR:best``, ``RUN_DIR:latest``
or ``RUN_DIR:STEP``. Every tensor of the new model whose path and shape match one of the source's
is taken from it; the rest (typically the classifier, for another number of classes) keeps its
fresh initialisation and is listed in the log. A resumed run restores its own checkpoint and never
applies ``init.from`` again.
"""

import os

import jax
import ml_collections
import orbax.checkpoint as ocp
from absl import logging

from cnn_jax import models
from cnn_jax.errors import ConfigError
from cnn_jax.models import pretrained
from cnn_jax.train import checkpoint
from cnn_jax.train import workdir as workdir_lib

WEIGHT_FILES = ('.pth', '.pt', '.bin', '.safetensors')


def source(config: ml_collections.ConfigDict) -> str:
  return config.init['from']


def _run_and_step(spec: str) -> tuple[str, str | int]:
  path, _, step = spec.rpartition(':') if ':' in os.path.basename(spec) else (spec, '', 'latest')
  return path, int(step) if step.isdigit() else step


def validate(config: ml_collections.ConfigDict) -> None:
  """One-line errors for a missing source or a model that cannot take a weights file."""
  spec = source(config)
  if not spec:
    if config.init.head_only:
      raise ConfigError('config.init.head_only=True trains a linear probe on pretrained features: '
                        'set config.init.from to a weights file or a run directory too.')
    return
  if spec.endswith(WEIGHT_FILES):
    if not os.path.isfile(spec):
      raise ConfigError(f'config.init.from={spec!r}: no such file. Download it first (see '
                        'docs/pretrained.md for each file\'s address).')
    if models.entry(config.model.name).torchvision is None:
      raise ConfigError(f'config.init.from={spec!r} is a weights file, but model '
                        f'{config.model.name!r} has no torchvision twin to take it; see '
                        'docs/pretrained.md for the models that have.')
    return
  run, step = _run_and_step(spec)
  if not os.path.isfile(os.path.join(run, 'config.json')):
    raise ConfigError(f'config.init.from={spec!r}: neither a weights file ({", ".join(WEIGHT_FILES)}) '
                      'nor a run directory (RUN_DIR[:best|:latest|:STEP], holding config.json).')
  if step not in ('best', 'latest') and not isinstance(step, int):
    raise ConfigError(f'config.init.from={spec!r}: after the colon comes best, latest or a step.')


def set_model_fields(config: ml_collections.ConfigDict) -> None:
  """Sets the model fields that make the zoo model compute what the weights file's torchvision
  model computes (e.g. padding='HALF'), unless the config sets them itself."""
  spec = source(config)
  if not spec.endswith(WEIGHT_FILES):
    return
  twin = models.entry(config.model.name).torchvision
  for field, value in twin.overrides.items():
    if field not in config.model.kwargs:
      config.model.kwargs[field] = value
  if twin.note:
    logging.info('%s with torchvision weights: %s', config.model.name, twin.note)


def _source_variables(config: ml_collections.ConfigDict, model, example_shape) -> dict:
  spec = source(config)
  if spec.endswith(WEIGHT_FILES):
    twin = models.entry(config.model.name).torchvision
    return pretrained.convert(model, pretrained.read_state_dict(spec), twin, example_shape)
  return _run_variables(*_run_and_step(spec))


def _run_variables(run: str, step) -> dict:
  """The variables a run saved at ``step`` ('best', 'latest' or an int), on this process's first
  device, in the shapes the checkpoint holds (no model is built: `pretrained.overlay` matches them
  to the new one); the EMA parameters where the run evaluated them."""
  config = workdir_lib.read_config(run)
  with checkpoint.quiet():
    mngr = checkpoint.manager(run, config, read_only=True)
    step = checkpoint.pick_step(mngr, step, run, config)
    use_ema = bool(workdir_lib.read_config(run, step).ema_decay)
    item = os.path.join(checkpoint.directory(run), str(step), 'default')
    saved = ocp.PyTreeCheckpointer().metadata(item).item_metadata.tree
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = {name: jax.tree_util.tree_map(
        lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=device), saved[field])
                for name, field in (('params', 'ema_params' if use_ema else 'params'),
                                    ('batch_stats', 'batch_stats')) if saved.get(field)}
    return checkpoint.restore_variables(mngr, step, abstract, use_ema)


def apply(state, config: ml_collections.ConfigDict, model, example_shape):
  """A fresh `TrainState` with every parameter and BatchNorm statistic that matches
  ``config.init.from`` by path and shape taken from it."""
  fresh = {'params': state.params, 'batch_stats': state.batch_stats}
  variables, taken, kept = pretrained.overlay(fresh, _source_variables(config, model,
                                                                       example_shape))
  if not taken:
    raise ConfigError(f'config.init.from={source(config)!r}: none of its tensors matches the '
                      f'model {config.model.name!r} by name and shape; is it the same '
                      'architecture?')
  logging.info('Initialised %d tensors from %s; freshly initialised: %s', taken, source(config),
               ', '.join(kept) or 'none')
  return state.replace(params=variables['params'], ema_params=variables['params'],
                       batch_stats=variables.get('batch_stats', state.batch_stats))
