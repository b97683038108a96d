"""Optax optimisers and learning-rate schedules from ``config.optim``."""

import functools
import re
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from cnn_jax.errors import ConfigError
from cnn_jax.layers import constraints

OPTIMIZERS = ('sgd', 'adam', 'adamw', 'rmsprop', 'lars')
SCHEDULES = ('constant', 'step', 'cosine', 'warmup_cosine', 'plateau')
LR_SCALINGS = ('none', 'linear', 'sqrt')


def validate(optim: ml_collections.ConfigDict) -> None:
  """Rejects unknown names before anything is built or compiled."""
  if optim.name not in OPTIMIZERS:
    raise ConfigError(f'config.optim.name={optim.name!r}: expected one of {OPTIMIZERS}.')
  if optim.schedule not in SCHEDULES:
    raise ConfigError(f'config.optim.schedule={optim.schedule!r}: expected one of {SCHEDULES}.')
  if optim.lr_scaling not in LR_SCALINGS:
    raise ConfigError(f'config.optim.lr_scaling={optim.lr_scaling!r}: expected one of '
                      f'{LR_SCALINGS}.')
  if not 0 < optim.layer_decay <= 1:
    raise ConfigError(f'config.optim.layer_decay={optim.layer_decay}: expected a factor in (0, 1] '
                      '(1: the same learning rate for every layer).')
  try:
    re.compile(optim.trainable)
  except re.error as error:
    raise ConfigError(f'config.optim.trainable={optim.trainable!r} is not a regular expression '
                      f'({error}).') from None


def peak_lr(optim: ml_collections.ConfigDict, batch_size: int) -> float:
  """``optim.lr`` for a global batch of ``batch_size``: as given ('none'), or with ``optim.lr``
  meant for ``optim.lr_base_batch`` examples and scaled by the batch's ratio to it ('linear',
  Goyal et al. 2017) or its square root ('sqrt')."""
  ratio = batch_size / optim.lr_base_batch
  return optim.lr * {'none': 1.0, 'linear': ratio, 'sqrt': ratio ** 0.5}[optim.lr_scaling]


def learning_rate(optim: ml_collections.ConfigDict, steps_per_epoch: int, total_steps: int,
                  batch_size: int | None = None) -> optax.Schedule:
  """The schedule, from `peak_lr` (``batch_size`` None: ``optim.lr`` as it is).

  ``optim.warmup_epochs`` > 0 ramps linearly from 0 to the peak first, whatever the schedule;
  cosine then decays over the steps left, and step decay keeps its epochs counted from the start.
  'warmup_cosine' is cosine (kept as a name). 'plateau' is constant here and scaled by
  `plateau_update` at evaluations.
  """
  lr = optim.lr if batch_size is None else peak_lr(optim, batch_size)
  warmup = int(optim.warmup_epochs * steps_per_epoch)
  if optim.schedule in ('constant', 'plateau'):
    after = optax.constant_schedule(lr)
  elif optim.schedule == 'step':
    boundaries = {max(int(epoch * steps_per_epoch) - warmup, 0): optim.decay_factor
                  for epoch in optim.decay_epochs}
    after = optax.piecewise_constant_schedule(lr, boundaries)
  else:
    after = optax.cosine_decay_schedule(lr, max(total_steps - warmup, 1))
  if not warmup:
    return after
  return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), after], [warmup])


def decay_mask(params) -> dict:
  """True for convolution and dense kernels; biases and normalisation parameters are not decayed."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: getattr(path[-1], 'key', None) == 'kernel', params)


def _module(path) -> str:
  return '/'.join(str(getattr(key, 'key', key)) for key in path[:-1])


def _trainable_labels(params, pattern: str) -> dict:
  labels = jax.tree_util.tree_map_with_path(
      lambda path, _: 'train' if re.search(pattern, _module(path) + '/' + str(
          getattr(path[-1], 'key', path[-1]))) else 'frozen', params)
  if 'train' not in jax.tree_util.tree_leaves(labels):
    names = [_module(p) for p, _ in jax.tree_util.tree_leaves_with_path(params)]
    raise ConfigError(f'config.optim.trainable={pattern!r} matches no parameter; they are named '
                      f'like {", ".join(dict.fromkeys(names[-3:]))}.')
  return labels


def _scale_layers(layers: Sequence[str], decay: float) -> optax.GradientTransformation:
  """Layer-wise learning-rate decay: the updates of layer ``l`` of ``L`` (in forward order) scaled
  by ``decay ** (L - 1 - l)``, so the last layer takes the full rate and the first the least."""
  depth = {name: index for index, name in enumerate(layers)}

  def update(updates, state, params=None):
    del params
    return jax.tree_util.tree_map_with_path(
        lambda path, u: u * decay ** (len(layers) - 1 - depth.get(_module(path), len(layers) - 1)),
        updates), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def create(optim: ml_collections.ConfigDict, schedule: optax.Schedule,
           layers: Sequence[str] = (), trainable: str = '') -> optax.GradientTransformation:
  """clip -> L2 weight decay (masked) -> optimiser; AdamW decays in its own, decoupled, way.

  ``layers``: the model's layers in forward order, for ``optim.layer_decay``. ``trainable``: a
  regular expression on parameter paths ('stage4/.*'); the parameters it does not match get no
  updates at all (``optim.trainable`` is used when this is empty).
  """
  tx = _optimizer(optim, schedule)
  if optim.layer_decay < 1:
    tx = optax.chain(tx, _scale_layers(layers, optim.layer_decay))
  pattern = trainable or optim.trainable
  if pattern:
    tx = optax.multi_transform({'train': tx, 'frozen': optax.set_to_zero()},
                               functools.partial(_trainable_labels, pattern=pattern))
  return tx


def _optimizer(optim: ml_collections.ConfigDict,
               schedule: optax.Schedule) -> optax.GradientTransformation:
  parts = []
  if optim.clip_norm:
    parts.append(optax.clip_by_global_norm(optim.clip_norm))
  if optim.weight_decay and optim.name not in ('adamw', 'lars'):
    # L2 regularisation: adds wd * w to the gradient, so it passes through the optimiser.
    parts.append(optax.add_decayed_weights(optim.weight_decay, mask=decay_mask))
  if optim.name == 'sgd':
    parts.append(optax.sgd(schedule, momentum=optim.momentum or None, nesterov=optim.nesterov))
  elif optim.name == 'adam':
    parts.append(optax.adam(schedule))
  elif optim.name == 'adamw':
    parts.append(optax.adamw(schedule, weight_decay=optim.weight_decay, mask=decay_mask))
  elif optim.name == 'lars':
    # Layer-wise trust ratios (You et al., 2017) on kernels only: biases and normalisation
    # parameters take plain momentum SGD, undecayed, as in the large-batch ResNet recipes.
    parts.append(optax.lars(schedule, weight_decay=optim.weight_decay,
                            weight_decay_mask=decay_mask, trust_coefficient=optim.trust_coefficient,
                            trust_ratio_mask=decay_mask, momentum=optim.momentum,
                            nesterov=optim.nesterov))
  else:
    parts.append(optax.rmsprop(schedule, decay=0.9, momentum=optim.momentum))
  return optax.chain(*parts)


def kernel_constraint(optim: ml_collections.ConfigDict) -> optax.GradientTransformation | None:
  """The max-norm projection of every kernel after each step, when ``optim.max_norm`` is set."""
  if not optim.max_norm:
    return None
  return constraints.constrain_kernels(functools.partial(constraints.max_norm,
                                                         max_value=optim.max_norm))


def plateau_update(state, eval_metrics: dict[str, float], optim: ml_collections.ConfigDict):
  """Reduce-on-plateau at an evaluation: multiply the lr by ``decay_factor`` after ``patience``
  evaluations without improvement of ``eval_metrics[optim.plateau_metric]``.

  ``optim.plateau_mode`` says whether the metric should go 'max' (accuracy) or 'min' (loss).
  """
  if optim.schedule != 'plateau':
    return state
  metric = eval_metrics[optim.plateau_metric]
  sign = 1.0 if optim.plateau_mode == 'max' else -1.0
  best, wait = float(state.plateau_best), int(state.plateau_wait)
  if sign * metric > sign * best + 1e-4 or not np.isfinite(best):
    best, wait = metric, 0
  else:
    wait += 1
  scale = float(state.lr_scale)
  if wait > optim.plateau_patience:
    scale, wait = scale * optim.decay_factor, 0
  return state.replace(lr_scale=jnp.asarray(scale, jnp.float32),
                       plateau_best=jnp.asarray(best, jnp.float32),
                       plateau_wait=jnp.asarray(wait, jnp.int32))
