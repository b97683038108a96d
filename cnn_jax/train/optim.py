"""Optax optimisers and learning-rate schedules from ``config.optim``."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from cnn_jax.errors import ConfigError
from cnn_jax.layers import constraints

OPTIMIZERS = ('sgd', 'adam', 'adamw', 'rmsprop')
SCHEDULES = ('constant', 'step', 'cosine', 'warmup_cosine', 'plateau')


def validate(optim: ml_collections.ConfigDict) -> None:
  """Rejects unknown names before anything is built or compiled."""
  if optim.name not in OPTIMIZERS:
    raise ConfigError(f'config.optim.name={optim.name!r}: expected one of {OPTIMIZERS}.')
  if optim.schedule not in SCHEDULES:
    raise ConfigError(f'config.optim.schedule={optim.schedule!r}: expected one of {SCHEDULES}.')


def learning_rate(optim: ml_collections.ConfigDict, steps_per_epoch: int,
                  total_steps: int) -> optax.Schedule:
  """The schedule; 'plateau' is constant here and scaled by `plateau_update` at evaluations."""
  lr = optim.lr
  if optim.schedule in ('constant', 'plateau'):
    return optax.constant_schedule(lr)
  if optim.schedule == 'step':
    boundaries = {int(epoch * steps_per_epoch): optim.decay_factor for epoch in optim.decay_epochs}
    return optax.piecewise_constant_schedule(lr, boundaries)
  if optim.schedule == 'cosine':
    return optax.cosine_decay_schedule(lr, max(total_steps, 1))
  warmup = max(1, int(optim.warmup_epochs * steps_per_epoch))
  return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, max(total_steps, warmup + 1))


def decay_mask(params) -> dict:
  """True for convolution and dense kernels; biases and normalisation parameters are not decayed."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: getattr(path[-1], 'key', None) == 'kernel', params)


def create(optim: ml_collections.ConfigDict, schedule: optax.Schedule) -> optax.GradientTransformation:
  """clip -> L2 weight decay (masked) -> optimiser; AdamW decays in its own, decoupled, way."""
  parts = []
  if optim.clip_norm:
    parts.append(optax.clip_by_global_norm(optim.clip_norm))
  if optim.weight_decay and optim.name != 'adamw':
    # L2 regularisation: adds wd * w to the gradient, so it passes through the optimiser.
    parts.append(optax.add_decayed_weights(optim.weight_decay, mask=decay_mask))
  if optim.name == 'sgd':
    parts.append(optax.sgd(schedule, momentum=optim.momentum or None, nesterov=optim.nesterov))
  elif optim.name == 'adam':
    parts.append(optax.adam(schedule))
  elif optim.name == 'adamw':
    parts.append(optax.adamw(schedule, weight_decay=optim.weight_decay, mask=decay_mask))
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
