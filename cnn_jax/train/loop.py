"""`train_and_evaluate(config, workdir)`: the training loop, importable from tests and notebooks."""

import dataclasses
import errno
import json
import math
import os
import re
import shlex
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from cnn_jax import arithmetic, console, models
from cnn_jax.data import augment, pipeline, sources
from cnn_jax.errors import ConfigError
from cnn_jax.models import pretrained
from cnn_jax.conv_form import IMPLS as CONV_IMPLS
from cnn_jax.conv_form import use as conv_impl
from cnn_jax.train import (checkpoint, device_choice, initial, metrics, optim, parallel,
                           preemption, steps)
from cnn_jax.train import workdir as workdir_lib
from cnn_jax.train.losses import CLASSIFICATION_LOSSES
from cnn_jax.train.state import TrainState
from cnn_jax.train.writers import MetricWriter
from experiments import base


COMPUTE_DTYPES = ('float32', 'bfloat16', 'float16')


def build_model(config: ml_collections.ConfigDict, num_classes: int):
  """The config's model (its kwargs typed by the model's fields, the contract checked),
  computing in ``config.compute_dtype``: what the loop trains and analysis opens."""
  kwargs, _ = models.resolve_kwargs(config.model.name, {}, dict(config.model.kwargs))
  model = models.get_model(config.model.name, num_classes=num_classes, **kwargs)
  models.check_contract(config.model.name, model,
                        needs_dtype=config.compute_dtype != 'float32')
  if config.compute_dtype != 'float32':
    model = model.clone(dtype=jnp.dtype(config.compute_dtype))
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
                      plateau_wait=jnp.zeros((), jnp.int32),
                      dynamic_scale=steps.initial_loss_scale(config.compute_dtype))

  return init


WRITE_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)
# (field, lowest, highest, lowest allowed itself): every numeric field the loop reads has a range.
RANGES = (
    ('batch_size', 1, None, True), ('eval_batch_size', 1, None, True),
    ('num_epochs', 0, None, False), ('num_steps', 0, None, True),
    ('log_every', 1, None, True), ('eval_every', 1, None, True),
    ('checkpoint.every', 1, None, True), ('checkpoint.keep', 1, None, True),
    ('label_smoothing', 0, 1, True), ('ema_decay', 0, 1, True), ('aux_loss_weight', 0, None, True),
    ('optim.lr', 0, None, False), ('optim.momentum', 0, 1, True),
    ('optim.weight_decay', 0, None, True), ('optim.decay_factor', 0, None, False),
    ('optim.warmup_epochs', 0, None, True), ('optim.plateau_patience', 0, None, True),
    ('optim.clip_norm', 0, None, True), ('optim.max_norm', 0, None, True),
    ('data.num_threads', 0, None, True), ('data.prefetch', 0, None, True),
    ('data.batches_per_transfer', 1, None, True), ('grad_accum_steps', 1, None, True),
    ('optim.lr_base_batch', 0, None, False), ('optim.trust_coefficient', 0, None, False),
    ('data.workers', -1, None, True), ('data.image_size', 1, None, True),
    ('data.holdout_fraction', 0, 1, True), ('data.augment.jitter', 0, 1, True),
    ('data.augment.randaugment_n', 0, None, True), ('data.augment.randaugment_m', 0, 31, True),
    ('data.augment.mixup_alpha', 0, None, False), ('data.augment.cutmix_alpha', 0, None, False),
)
# Fractions in (0, 1] or [0, 1]: (field, whether 0 is allowed).
FRACTIONS = (('data.crop_fraction', False), ('data.augment.erasing_prob', True))


def _check_range(config: ml_collections.ConfigDict, field: str, low, high, closed: bool) -> None:
  value = config
  for part in field.split('.'):
    value = value[part]
  if field == 'num_epochs' and config.num_steps:
    return  # num_steps > 0 takes over
  if (value < low if closed else value <= low) or (high is not None and value >= high):
    bound = f'{">=" if closed else ">"} {low}' + (f' and < {high}' if high is not None else '')
    hint = ' (or set config.num_steps > 0)' if field == 'num_epochs' else ''
    raise ConfigError(f'config.{field}={value!r}: expected a value {bound}{hint}.')


def validate(config: ml_collections.ConfigDict) -> None:
  """Every name the loop dispatches on and every numeric range, checked before any data is read
  or code compiled."""
  for field, low, high, closed in RANGES:
    _check_range(config, field, low, high, closed)
  for field, zero in FRACTIONS:
    section, *rest = field.split('.')
    value = config[section]
    for part in rest:
      value = value[part]
    if not (0 <= value <= 1 if zero else 0 < value <= 1):
      raise ConfigError(f'config.{field}={value!r}: expected a value in {"[" if zero else "("}0, 1].')
  augment.plan(config.data.augment.ops)
  if config.grad_accum_steps > 1 and config.compute_dtype == 'float16':
    raise ConfigError('config.grad_accum_steps > 1 does not combine with float16\'s loss scaling; '
                      'use config.compute_dtype=bfloat16 (no loss scale needed).')
  if config.resume not in workdir_lib.RESUME_MODES:
    raise ConfigError(f'config.resume={config.resume!r}: expected one of '
                       f'{workdir_lib.RESUME_MODES}.')
  if config.checkpoint.best_mode not in ('max', 'min'):
    raise ConfigError(f"config.checkpoint.best_mode={config.checkpoint.best_mode!r}: expected "
                       "'max' or 'min'.")
  optim.validate(config.optim)
  if config.parallel.mode not in parallel.MODES:
    raise ConfigError(f'config.parallel.mode={config.parallel.mode!r}: expected one of '
                      f'{parallel.MODES}.')
  if config.loss not in CLASSIFICATION_LOSSES:
    raise ConfigError(f'config.loss={config.loss!r}: expected one of {sorted(CLASSIFICATION_LOSSES)}.')
  for field in ('optim.plateau_metric', 'checkpoint.best_metric'):
    section, name = field.split('.')
    value = config[section][name]
    if value and value not in metrics.names():
      raise ConfigError(f'config.{field}={value!r}: expected an eval metric, one of '
                        f'{metrics.names()}.')
  if config.conv_impl not in CONV_IMPLS:
    raise ConfigError(f'config.conv_impl={config.conv_impl!r}: expected one of {CONV_IMPLS}.')
  if config.compute_dtype not in COMPUTE_DTYPES:
    raise ConfigError(f'config.compute_dtype={config.compute_dtype!r}: expected one of '
                      f'{COMPUTE_DTYPES}.')
  # The model exists and every kwarg is one of its fields, of the right type.
  models.resolve_kwargs(config.model.name, {}, dict(config.model.kwargs))
  initial.validate(config)


def abstract_init(model, example_shape: tuple) -> tuple:
  """``(output, variables)`` of ``model`` on one example of ``example_shape``, from shapes alone
  (no compile). Its key is made inside the trace: an eager one is a compile of its own."""
  return jax.eval_shape(lambda x: model.init_with_output(jax.random.key(0), x, train=False),
                        jax.ShapeDtypeStruct((1, *example_shape), jnp.float32))


def check_task(config: ml_collections.ConfigDict, model, source: sources.Source,
               example_shape: tuple) -> None:
  """Model output, loss and metrics against the data's labels, from shapes alone (no compile)."""
  dense = bool(source.label_shape)
  kind = 'per-pixel' if dense else 'per-example'
  if dense != (config.loss == 'pixel_cross_entropy'):
    raise ConfigError(f"{source.name} has {kind} labels but config.loss={config.loss!r}; use "
                      f"{'pixel_cross_entropy' if dense else 'softmax_cross_entropy'}.")
  usable = metrics.names(dense)
  for field in ('optim.plateau_metric', 'checkpoint.best_metric'):
    section, name = field.split('.')
    if config[section][name] and config[section][name] not in usable:
      raise ConfigError(f'config.{field}={config[section][name]!r} is not computed for {kind} '
                        f'labels; use one of {usable}.')
  output, variables = abstract_init(model, example_shape)
  if isinstance(output, tuple):
    output = output[0]
  models.check_contract(config.model.name, model, batch_norm_across_devices=(
      config.parallel.mode == 'pmap' and 'batch_stats' in variables))
  native = (models.input_shape(config.model.name) or example_shape)[:-1]
  spatial = example_shape[:-1]
  if len(native) == len(spatial) and any(s * 4 <= n for s, n in zip(spatial, native)):
    logging.warning('%s is designed for inputs of %s; %s examples are %s, far smaller: its '
                    'downsampling may leave little spatial resolution (see arithmetic.summarize).',
                    config.model.name, 'x'.join(map(str, native)), source.name,
                    'x'.join(map(str, spatial)))
  expected = (1, *source.label_shape, source.num_classes)
  if tuple(output.shape) != expected:
    raise ConfigError(f'Model {config.model.name!r} maps one {source.name} example '
                      f'{(1, *example_shape)} to {tuple(output.shape)}, but the labels need logits '
                      f'{expected}: pick a {"dense-prediction" if dense else "classification"} '
                      'model for this dataset.')


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains ``config`` into ``workdir``, resuming from its newest intact checkpoint; returns what
  ``final_metrics.json`` holds (the last and best checkpoints' val and test metrics, and the
  splits; docs/training.md#splits), or {} when stopped early by SIGTERM / Ctrl-C, after saving a
  checkpoint.

  Leaves ``WORKDIR/config.json`` (never rewritten; ``config.<step>.json`` per changed resume),
  ``checkpoints/`` (Orbax), ``tensorboard/``, ``metrics.jsonl`` and ``final_metrics.json``.

  Raises:
    ConfigError: a bad config or a workdir it cannot use, before anything is compiled.
    FloatingPointError: the loss, the parameters or the eval loss stopped being finite; the last
      checkpoint (all finite) is kept.
    CheckpointError: a save failed (full disk, permissions); training stops at once.
  """
  validate(config)
  if '://' in workdir:
    raise ConfigError(
        f'--workdir={workdir}: the workdir must be a filesystem path that every process sees '
        '(its lock, logs and config are plain files). Mount the bucket (gcsfuse --implicit-dirs '
        'BUCKET /mnt/BUCKET, then --workdir=/mnt/BUCKET/run) or use a shared filesystem (NFS, '
        'Filestore, Lustre).')
  # Every step is traced inside: the convolutions compute in the configured form.
  with workdir_lib.claim(workdir), conv_impl(config.conv_impl):
    return _train(config, workdir)


def _train(config: ml_collections.ConfigDict, workdir: str) -> dict:
  launched = time.time()
  run = _Run(config, workdir)
  trained = _run_steps(run)
  if trained is None:  # stopped by a signal, its checkpoint saved
    return {}
  state, val_metrics = trained
  final = _test_at_end(run, state, val_metrics)
  final = {'splits': run.split_specs, **final}
  _report(workdir, final, run.split_sources, time.time() - launched,
          max(run.total_steps - run.start_step, 0), config.checkpoint.best_metric or 'accuracy')
  return final


class _Run:
  """A run set up to train, before any step: its data, model, restored or fresh state and
  compiled-on-first-use steps, checked against the devices (bad input fails here, before any
  compile); and the evaluations the loop makes with them."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str):
    self.config, self.workdir = config, workdir
    initial.set_model_fields(config)
    changed = workdir_lib.check_resume(config, workdir, bool(checkpoint.complete_steps(workdir)))
    if config.resume == 'restart':
      workdir_lib.archive(workdir)
      changed = {}
    mesh = self.mesh = parallel.make_mesh()
    self.split_specs, self.split_sources = sources.run_sources(config.data)
    train_source = self.split_sources['train']
    example_shape = pipeline.source_shape(train_source, config.data)
    pipeline.plan(train_source, config.data)

    # Both batch sizes are checked against the devices here, before anything compiles.
    steps_per_epoch = pipeline.steps_per_epoch(train_source, config.batch_size, mesh)
    pipeline.local_batch_size(config.eval_batch_size, mesh)
    per_device = config.batch_size // mesh.devices.size
    if per_device % config.grad_accum_steps:
      raise ConfigError(f'config.grad_accum_steps={config.grad_accum_steps} must divide each '
                        f"device's batch ({per_device} = {config.batch_size} over "
                        f'{mesh.devices.size} devices); pick a divisor of {per_device}.')
    self.total_steps = config.num_steps or math.ceil(config.num_epochs * steps_per_epoch)
    schedule = optim.learning_rate(config.optim, steps_per_epoch, self.total_steps,
                                   config.batch_size)
    model = build_model(config, train_source.num_classes)
    if config.parallel.mode == 'pmap' and 'axis_name' in {
        f.name for f in dataclasses.fields(model)}:
      model = model.clone(axis_name=steps.AXIS)  # per device, BatchNorm averages over 'data'
    check_task(config, model, train_source, example_shape)
    tx = optim.create(config.optim, schedule, *_layers_and_trainable(config, model, example_shape))

    init = state_initializer(model, tx, example_shape, config)
    left = self.total_steps - max(checkpoint.complete_steps(workdir), default=0)
    macs = arithmetic.summarize(model, (1, *example_shape), print_fn=None, train=False).total_macs
    make_step = lambda mesh: steps.make_train_step(
        model, tx, schedule, config, mesh, optim.kernel_constraint(config.optim), left, macs)
    self.train_step = None
    if device_choice.applies(config):
      mesh, self.train_step = device_choice.choose(
          config, mesh, make_step, init, example_shape, train_source.label_shape,
          train_source.num_classes, left)
      self.mesh = mesh
    replicated = parallel.replicated(mesh)
    for name in checkpoint.unfinished(workdir):
      logging.warning('Ignoring %s: a save that never completed (the process was stopped while '
                      'writing it).', os.path.join(checkpoint.directory(workdir), name))
    # The restore target costs nothing: shapes and shardings only, no initialisation.
    state = checkpoint.restore(workdir, config, jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated),
        jax.eval_shape(init)))
    self.mngr = checkpoint.manager(workdir, config)
    if state is None:
      state = jax.jit(init, out_shardings=replicated)()
      if initial.source(config):
        state = initial.apply(state, config, model, example_shape)
    self.state = state
    start_step = self.start_step = int(jax.device_get(state.step))
    if start_step:
      logging.info('Resumed from %s at step %d.', checkpoint.directory(workdir), start_step)
    if start_step >= self.total_steps and start_step:
      logging.warning('The run already has %d steps, the configured total is %d: nothing left to '
                      'train, evaluating the restored model. Raise config.num_epochs (or '
                      'config.num_steps) to train further.', start_step, self.total_steps)
    workdir_lib.record(config, workdir, start_step, changed)
    _log_start(config, workdir, state, example_shape, macs, mesh, steps_per_epoch,
               self.total_steps, start_step, self.split_specs)

    self.train_step = self.train_step or make_step(mesh)
    self.eval_step = steps.make_eval_step(model, config.loss, mesh, config.parallel.mode == 'pmap')
    self.writer = MetricWriter(workdir, self.total_steps, start_step)
    self.batches = pipeline.train_batches(train_source, config, mesh, start_step)

  def evaluate_on(self, variables: dict, source: sources.Source) -> dict[str, float]:
    return steps.evaluate(self.eval_step, variables,
                          pipeline.eval_batches(source, self.config, self.mesh))

  def validate(self, state: TrainState) -> dict[str, float]:
    """The val split's figures, logged and printed with where the best checkpoint stands."""
    step = int(state.step)
    results = self.evaluate_on(state.variables(use_ema=bool(self.config.ema_decay)),
                               self.split_sources['val'])
    self.writer.write(step, results, 'val')
    checkpoints = self.config.checkpoint
    best = self.writer.best('val', checkpoint.ranking(checkpoints.best_metric or 'accuracy',
                                                      checkpoints.best_mode))
    self.writer.line(f'step {step}/{self.total_steps}: val ' + _metrics_text(results)
                     + ('  (best so far)' if best == step else f'  (best: step {best})'))
    if not np.isfinite(results['loss']):
      raise self.diverged(f'The eval loss became {results["loss"]}', step)
    return results

  def diverged(self, what: str, step: int) -> FloatingPointError:
    self.mngr.wait_until_finished()
    return FloatingPointError(
        f'{what} by step {step}. The last checkpoint (step {self.mngr.latest_step()}, all finite) '
        f'in {checkpoint.directory(self.workdir)} is kept and a rerun resumes from it; lower '
        'config.optim.lr, add config.optim.clip_norm, or check the inputs.')


class _TrainScalars:
  """The steps' logs since the last write: checked finite, averaged and written with the rate
  (`write`), every ``log_every`` steps and before every save, so no diverged state is saved."""

  def __init__(self, run: _Run):
    self.run, self.pending = run, []
    self.since = (time.time(), run.start_step)

  def add(self, logs: dict) -> None:
    self.pending.append(logs)

  def write(self, done: int) -> None:
    history, self.pending = jax.device_get(self.pending), []
    for name in ('loss', 'param_norm'):
      values = np.asarray([h[name] for h in history])
      if not np.all(np.isfinite(values)):
        raise self.run.diverged(f'The training {name.replace("_", " ")} became '
                                f'{values[~np.isfinite(values)][0]}', done)
    scalars = {k: float(np.mean([h[k] for h in history])) for k in history[-1]}
    scalars['steps_per_second'] = (done - self.since[1]) / max(time.time() - self.since[0], 1e-9)
    scalars['examples_per_second'] = scalars['steps_per_second'] * self.run.config.batch_size
    self.since = (time.time(), done)
    self.run.writer.write(done, scalars, 'train')
    self.run.writer.progress(done, {'loss': scalars['loss'], 'accuracy': scalars['accuracy']})


def _run_steps(run: _Run) -> tuple[TrainState, dict[str, float]] | None:
  """Trains from the run's start to its total steps, with the logs, evaluations and saves due at
  each; returns the last state and its val figures, or None where a signal stopped the run (its
  checkpoint saved)."""
  config, state = run.config, run.state
  # On CPU a queue of many steps with cross-device reductions can abort XLA; wait often there.
  sync_every = 4 if jax.default_backend() == 'cpu' else config.log_every
  scalars, saver = _TrainScalars(run), checkpoint.Saver(run.mngr, run.workdir)
  val_metrics, started = {}, time.time()
  try:
    # The logs close inside the try: a close that cannot flush is a failed write like any other.
    with preemption.stop_on_signals() as stop, run.writer:
      for step in range(run.start_step, run.total_steps):
        state, logs = run.train_step(state, next(run.batches))
        scalars.add(logs)
        if step == run.start_step:  # compiling is part of the first step: say what it cost
          jax.block_until_ready(logs)
          logging.info('First step done in %.1f s (compiling included).', time.time() - started)
        done = step + 1
        synced = done % sync_every == 0
        if synced:
          jax.block_until_ready(logs)
          saver.poll()  # a failed save stops the run here
        # Several processes must stop at the same step: they compare notes at sync points only.
        stopping = (synced or jax.process_count() == 1) and stop.agreed()
        evaluate = done % config.eval_every == 0 or done == run.total_steps
        save = evaluate or done % config.checkpoint.every == 0 or stopping
        if done % config.log_every == 0 or save:
          scalars.write(done)
        if evaluate:
          val_metrics = run.validate(state)
          state = optim.plateau_update(state, val_metrics, config.optim)
        if save:
          saver.save(state, val_metrics if evaluate else None)
        if stopping:
          saver.confirm()
          if jax.process_index() == 0:
            print(f'Stopped by {stop.name} at step {done}/{run.total_steps}; checkpoint saved in '
                  f'{checkpoint.directory(run.workdir)}. Run the same command to resume.',
                  flush=True)
          return None
      if not val_metrics:  # resumed at the end: report the restored model
        val_metrics = run.validate(state)
      saver.confirm()
  except OSError as error:
    if error.errno not in WRITE_ERRORS:
      raise
    # A full disk may hit the logs before (or after) a save: either way, say what failed and
    # which checkpoint a rerun resumes from.
    saver.confirm()
    raise checkpoint.write_failed(run.workdir, f'Writing {error.filename or "to the workdir"}',
                                  error.strerror or str(error)) from error
  finally:
    run.batches.close()
    checkpoint.close(run.mngr)
  return state, val_metrics


def _test_at_end(run: _Run, state: TrainState, val_metrics: dict) -> dict:
  """The last and the best checkpoint's val figures, and their test figures: the test split is
  evaluated here only, once on each."""
  config, test_source = run.config, run.split_sources['test']
  last = {'step': max(run.total_steps, run.start_step), 'val': val_metrics}
  final = {'last': last}
  use_ema = bool(config.ema_decay)
  if config.checkpoint.best_metric:
    with checkpoint.quiet():
      saved = checkpoint.manager(run.workdir, config, read_only=True)
    best_step = saved.best_step()
    if best_step is not None:
      final['best'] = {'step': best_step, 'val': run.writer.records['val'].get(best_step, {})}
      final['best_by'] = f'val {config.checkpoint.best_metric} ({config.checkpoint.best_mode})'
  if test_source is not None:
    variables = state.variables(use_ema)
    last['test'] = run.evaluate_on(variables, test_source)
    if 'best' in final:
      best = final['best']
      like = jax.tree_util.tree_map(
          lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), variables)
      best['test'] = last['test'] if best['step'] == last['step'] else run.evaluate_on(
          checkpoint.restore_variables(saved, best['step'], like, use_ema), test_source)
  return final


def _layers_and_trainable(config, model, example_shape) -> tuple[list[str], str]:
  """What `optim.create` needs of the model: its layers in forward order (for a layer-wise
  learning-rate decay) and, for a linear probe, the pattern of its classifier's parameters."""
  if config.optim.layer_decay == 1 and not config.init.head_only:
    return [], ''
  layers = [layer.name for layer in pretrained.layers(model, example_shape)]
  return layers, ('^' + re.escape(layers[-1]) + '/' if config.init.head_only else '')


def _log_start(config, workdir: str, state: TrainState, example_shape: tuple, macs: int, mesh,
               steps_per_epoch: int, total_steps: int, start_step: int,
               split_specs: dict[str, str]) -> None:
  """What a run is about to do, in a few lines: a log read later says what ran where (``macs``:
  the model's multiply-adds per example)."""
  devices = list(mesh.devices.flat)
  params = sum(x.size for x in jax.tree_util.tree_leaves(state.params))
  fewer = f' (of {jax.device_count()})' if len(devices) < jax.device_count() else ''
  logging.info(
      'Devices: %d x %s (%s)%s over %d process(es), %d local; parallel mode %r; batch %d global, '
      '%d per device%s; compute dtype %s; convolutions %s; peak learning rate %g.', len(devices),
      devices[0].device_kind, jax.default_backend(), fewer, jax.process_count(),
      jax.local_device_count(), config.parallel.mode, config.batch_size,
      config.batch_size // len(devices),
      f' in {config.grad_accum_steps} parts' if config.grad_accum_steps > 1 else '',
      config.compute_dtype, config.conv_impl, optim.peak_lr(config.optim, config.batch_size))
  logging.info('Model %s: %s parameters, %s multiply-adds per %s example.', config.model.name,
               f'{params:,}', f'{macs:,}', 'x'.join(map(str, example_shape)))
  logging.info('Data %s: train %s, val %s, test %s; %d steps per epoch, %d steps in all; workdir '
               '%s, %s.', config.data.name, *(split_specs[r] or 'none' for r in sources.ROLES),
               steps_per_epoch, total_steps, console.shown(workdir),
               f'resumed at step {start_step}' if start_step else 'fresh start')
  changed = workdir_lib.differences(base.get_config().to_dict(), config.to_dict())
  flags = [f'  {workdir_lib.as_flag(field, value)}' for field, (_, value) in changed.items()]
  logging.info('Config: every field in %s; set differently from experiments/base.py:\n%s',
               console.shown(os.path.join(workdir, 'config.json')), '\n'.join(flags))


def _metrics_text(metrics: dict[str, float]) -> str:
  return '  '.join(f'{name} {value:.4f}' for name, value in metrics.items() if name != 'count')


def _report(workdir: str, final: dict, split_sources: dict, seconds: float, trained: int,
            metric: str) -> None:
  """The end of a run on the console: how long it took, the figures by checkpoint and split,
  where everything is, and the TensorBoard command; ``final_metrics.json`` holds every metric."""
  if jax.process_index() != 0:
    return
  with open(os.path.join(workdir, 'final_metrics.json'), 'w', encoding='utf-8') as f:
    json.dump(final, f, indent=2)
  roles = [role for role in ('val', 'test') if role in final['last']]
  headers = [f'{role} {metric}' for role in roles]
  lines = [f'Finished in {seconds:.0f} s ({trained} steps trained in this launch).',
           ' ' * 18 + ''.join(f'{h:>{len(h) + 2}}' for h in headers)]
  for name in ('best', 'last'):
    if name in final:
      figures = [final[name][role].get(metric) for role in roles]
      lines.append(f'{name} (step {final[name]["step"]})'.ljust(18) + ''.join(
          f'{"-" if v is None else f"{v:.4f}":>{len(h) + 2}}' for v, h in zip(figures, headers)))
  described = [f'{role}: {final["splits"][role]} ({len(split_sources[role]):,} examples)'
               for role in sources.ROLES if split_sources[role] is not None]
  lines.append('; '.join(described) + (f'; best by {final["best_by"]}' if 'best' in final else ''))
  lines.append(f'every metric: {console.shown(os.path.join(workdir, "final_metrics.json"))}; '
               f'checkpoints: {console.shown(checkpoint.directory(workdir))}')
  tensorboard = shlex.quote(console.shown(os.path.join(workdir, 'tensorboard')))
  lines.append(f'curves: {console.tool("tensorboard")} --logdir {tensorboard}')
  print('\n'.join(lines), flush=True)
