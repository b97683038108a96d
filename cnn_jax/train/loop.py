"""`train_and_evaluate(config, workdir)`: the training loop, importable from tests and notebooks."""

import dataclasses
import functools
import json
import math
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from cnn_jax import models
from cnn_jax.data import pipeline, sources
from cnn_jax.train import checkpoint, optim, parallel, steps
from cnn_jax.train.losses import CLASSIFICATION_LOSSES
from cnn_jax.train.state import TrainState
from cnn_jax.train.writers import MetricWriter


def build_model(config: ml_collections.ConfigDict, num_classes: int):
  """The config's model; in per-device mode BatchNorm averages its statistics over 'data'."""
  kwargs = dict(config.model.kwargs)
  model = models.get_model(config.model.name, num_classes=num_classes, **kwargs)
  fields = {f.name for f in dataclasses.fields(model)}
  if config.parallel.mode == 'pmap' and 'axis_name' in fields:
    model = model.clone(axis_name=steps.AXIS)
  return model


def state_initializer(model, tx, example_shape, config):
  """The function that builds a fresh `TrainState` (jit it, or `jax.eval_shape` it for free)."""

  def init() -> TrainState:
    dummy = jnp.zeros((1, *example_shape), jnp.float32)
    variables = model.init({'params': jax.random.key(config.seed)}, dummy, train=False)
    params = variables['params']
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      batch_stats=variables.get('batch_stats', {}), opt_state=tx.init(params),
                      ema_params=params, lr_scale=jnp.ones((), jnp.float32),
                      plateau_best=jnp.full((), jnp.nan, jnp.float32),
                      plateau_wait=jnp.zeros((), jnp.int32))

  return init


EVAL_METRICS = ('loss', 'accuracy', 'top5_accuracy', 'mean_iou')


def validate(config: ml_collections.ConfigDict) -> None:
  """Every name the loop dispatches on, checked before any data is read or code compiled."""
  optim.validate(config.optim)
  if config.parallel.mode not in parallel.MODES:
    raise ValueError(f'config.parallel.mode={config.parallel.mode!r}: expected one of '
                     f'{parallel.MODES}.')
  if config.loss not in CLASSIFICATION_LOSSES:
    raise ValueError(f'config.loss={config.loss!r}: expected one of {sorted(CLASSIFICATION_LOSSES)}.')
  for field in ('optim.plateau_metric', 'checkpoint.best_metric'):
    section, name = field.split('.')
    value = config[section][name]
    if value and value not in EVAL_METRICS:
      raise ValueError(f'config.{field}={value!r}: expected an eval metric, one of {EVAL_METRICS}.')
  if config.model.name not in models.list_models():
    raise ValueError(f'config.model.name={config.model.name!r}: registered models are '
                     f'{", ".join(models.list_models())}.')


def check_task(config: ml_collections.ConfigDict, model, source: sources.Source,
               example_shape: tuple) -> None:
  """Model output, loss and metrics against the data's labels, from shapes alone (no compile)."""
  dense = bool(source.label_shape)
  kind = 'per-pixel' if dense else 'per-example'
  if dense != (config.loss == 'pixel_cross_entropy'):
    raise ValueError(f"{source.name} has {kind} labels but config.loss={config.loss!r}; use "
                     f"{'pixel_cross_entropy' if dense else 'softmax_cross_entropy'}.")
  usable = "'accuracy' or 'mean_iou'" if dense else "'accuracy' or 'top5_accuracy'"
  for field in ('optim.plateau_metric', 'checkpoint.best_metric'):
    section, name = field.split('.')
    if config[section][name] == ('top5_accuracy' if dense else 'mean_iou'):
      raise ValueError(f'config.{field}={config[section][name]!r} is not computed for {kind} '
                       f'labels; use {usable}.')
  output = jax.eval_shape(functools.partial(model.init_with_output, train=False),
                          jax.random.key(0), jax.ShapeDtypeStruct((1, *example_shape),
                                                                  jnp.float32))[0]
  expected = (1, *source.label_shape, source.num_classes)
  if tuple(output.shape) != expected:
    raise ValueError(f'Model {config.model.name!r} maps one {source.name} example '
                     f'{(1, *example_shape)} to {tuple(output.shape)}, but the labels need logits '
                     f'{expected}: pick a {"dense-prediction" if dense else "classification"} '
                     'model for this dataset.')


def _write_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  if jax.process_index() == 0:
    with open(os.path.join(workdir, 'config.json'), 'w', encoding='utf-8') as f:
      f.write(config.to_json_best_effort(indent=2))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains ``config`` into ``workdir``, resuming from its latest checkpoint; returns eval metrics.

  Leaves ``WORKDIR/config.json``, ``checkpoints/`` (Orbax), ``tensorboard/`` and ``metrics.jsonl``.
  Raises FloatingPointError, keeping the last good checkpoint, if the loss becomes NaN or Inf.
  """
  validate(config)
  os.makedirs(workdir, exist_ok=True)
  _write_config(config, workdir)
  mesh = parallel.make_mesh()
  train_source = sources.load(config.data.name, config.data.train_split, config.data.data_dir)
  eval_source = sources.load(config.data.name, config.data.eval_split, config.data.data_dir)
  example_shape = pipeline.source_shape(train_source, config.data)

  # Both batch sizes are checked against the devices here, before anything compiles.
  steps_per_epoch = pipeline.steps_per_epoch(train_source, config.batch_size, mesh)
  pipeline.local_batch_size(config.eval_batch_size, mesh)
  total_steps = config.num_steps or math.ceil(config.num_epochs * steps_per_epoch)
  schedule = optim.learning_rate(config.optim, steps_per_epoch, total_steps)
  tx = optim.create(config.optim, schedule)
  model = build_model(config, train_source.num_classes)
  check_task(config, model, train_source, example_shape)

  init = state_initializer(model, tx, example_shape, config)
  replicated = parallel.replicated(mesh)
  mngr = checkpoint.manager(workdir, config)
  # The restore target costs nothing: shapes and shardings only, no initialisation.
  state = checkpoint.restore(mngr, jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), jax.eval_shape(init)))
  if state is None:
    state = jax.jit(init, out_shardings=replicated)()
  else:
    logging.info('Resumed from %s at step %d.', checkpoint.directory(workdir), int(state.step))

  train_step = steps.make_train_step(model, tx, schedule, config, mesh,
                                     optim.kernel_constraint(config.optim))
  eval_step = steps.make_eval_step(model, config.loss, mesh, config.parallel.mode == 'pmap')
  writer = MetricWriter(workdir, total_steps)
  start_step = int(jax.device_get(state.step))
  batches = pipeline.train_batches(train_source, config, mesh, start_step)
  # On CPU a queue of many steps with cross-device reductions can abort XLA; wait often there.
  sync_every = 4 if jax.default_backend() == 'cpu' else config.log_every

  def run_eval(state) -> dict[str, float]:
    results = steps.evaluate(eval_step, state.variables(use_ema=bool(config.ema_decay)),
                             pipeline.eval_batches(eval_source, config, mesh))
    writer.write(int(state.step), results, 'eval')
    return results

  eval_metrics, pending, last_log = {}, [], (time.time(), start_step)
  try:
    for step in range(start_step, total_steps):
      state, logs = train_step(state, next(batches))
      pending.append(logs)
      done = step + 1
      if done % sync_every == 0:
        jax.block_until_ready(logs)
      is_last = done == total_steps
      evaluate = done % config.eval_every == 0 or is_last
      save = evaluate or done % config.checkpoint.every == 0
      # Every save is preceded by the finite-loss check, so no NaN state is ever written.
      if done % config.log_every == 0 or save:
        history = jax.device_get(pending)
        pending = []
        losses = np.asarray([h['loss'] for h in history])
        if not np.all(np.isfinite(losses)):
          raise FloatingPointError(
              f'The training loss became {losses[~np.isfinite(losses)][0]} by step {done}. The last '
              f'good checkpoint (step {mngr.latest_step()}) in {checkpoint.directory(workdir)} is '
              'kept; lower config.optim.lr, add config.optim.clip_norm, or check the inputs.')
        scalars = {k: float(np.mean([h[k] for h in history])) for k in history[-1]}
        elapsed = time.time() - last_log[0]
        scalars['steps_per_second'] = (done - last_log[1]) / max(elapsed, 1e-9)
        scalars['examples_per_second'] = scalars['steps_per_second'] * config.batch_size
        last_log = (time.time(), done)
        writer.write(done, scalars, 'train')
        writer.progress(done, {'loss': scalars['loss'], 'accuracy': scalars['accuracy']})
      if evaluate:
        eval_metrics = run_eval(state)
        state = optim.plateau_update(state, eval_metrics, config.optim)
      if save:
        checkpoint.save(mngr, state, eval_metrics if evaluate else None)
    if not eval_metrics:  # resumed at the end: report the restored model
      eval_metrics = run_eval(state)
  finally:
    mngr.wait_until_finished()
    mngr.close()
    writer.close()
  _report(config, workdir, eval_metrics)
  return eval_metrics


def _report(config, workdir: str, metrics: dict[str, float]) -> None:
  if jax.process_index() != 0:
    return
  split = config.data.eval_split
  lines = [f'{split} {name} {value:.4f}' for name, value in metrics.items() if name != 'count']
  lines.append(f'({int(metrics["count"])} {split} examples)')
  lines.append(f'checkpoints: {checkpoint.directory(workdir)}')
  lines.append(f'view the curves: tensorboard --logdir {os.path.join(os.path.abspath(workdir), "tensorboard")}')
  print('\n'.join(lines), flush=True)
  with open(os.path.join(workdir, 'final_metrics.json'), 'w', encoding='utf-8') as f:
    json.dump(metrics, f, indent=2)
