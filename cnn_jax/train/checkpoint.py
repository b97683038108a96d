"""Orbax checkpoints: async saves, the last K plus the best by an eval metric, automatic resume."""

import contextlib
import logging
import math
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import orbax.checkpoint as ocp
from absl import logging as absl_logging
from orbax.checkpoint.checkpoint_managers import preservation_policy as policies

class OrbaxBelow(logging.Filter):
  """Drops Orbax's log records below ``level`` (its per-save INFO lines, read-only notices)."""

  def __init__(self, level: int = logging.WARNING):
    super().__init__()
    self.level = level

  def filter(self, record) -> bool:
    return record.levelno >= self.level or '/orbax/' not in record.pathname


@contextlib.contextmanager
def quiet(level: int = logging.ERROR):
  """Within the block, Orbax logs only from ``level`` up (absl's logger)."""
  below = OrbaxBelow(level)
  logger = logging.getLogger('absl')
  logger.addFilter(below)
  try:
    yield
  finally:
    logger.removeFilter(below)


class CheckpointError(RuntimeError):
  """A checkpoint (or log) could not be written, or none can be resumed from: the run stops."""


def directory(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), 'checkpoints')


def ranking(metric: str, mode: str):
  """Sort key of a checkpoint's saved metrics: the best checkpoint has the highest key.

  A non-finite or missing metric ranks last (a diverged model never wins best-k), and among equal
  metrics the earliest step wins (``metrics['step']`` is saved with every checkpoint).
  """
  if mode not in ('max', 'min'):
    raise ValueError(f"checkpoint.best_mode={mode!r}: expected 'max' or 'min'.")
  sign = 1.0 if mode == 'max' else -1.0

  def key(metrics: dict) -> tuple[float, float]:
    value = metrics.get(metric)
    value = sign * value if isinstance(value, (int, float)) and math.isfinite(value) else -math.inf
    return value, -metrics.get('step', 0)

  return key


def manager(workdir: str, config: ml_collections.ConfigDict | None = None,
            read_only: bool = False) -> ocp.CheckpointManager:
  """A manager over ``WORKDIR/checkpoints``; ``config.checkpoint`` sets retention and best-k.

  The metric of every save is written beside it (Orbax does so only when ``best_fn`` is set), so
  `best_step()` stays right across restarts and processes.
  """
  ckpt = config.checkpoint if config is not None else None
  best = dict(best_fn=ranking(ckpt.best_metric, ckpt.best_mode), best_mode='max') if (
      ckpt is not None and ckpt.best_metric) else {}
  if read_only or config is None:
    with quiet():  # Orbax logs each option that read-only overrides, at every launch
      return ocp.CheckpointManager(directory(workdir), options=ocp.CheckpointManagerOptions(
          read_only=True, enable_async_checkpointing=False, **best))
  # Orbax splits a replicated array's write among its replicas so that hosts share it; within one
  # process that only costs an eager slice per array and device, compiled anew at every launch.
  with quiet():  # Orbax warns at every override
    ocp.type_handlers.register_type_handler(
        jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=jax.process_count() > 1),
        override=True)
  keep = [policies.LatestN(n=ckpt.keep)]
  if best:
    keep.append(policies.BestN(get_metric_fn=best['best_fn'], n=1,
                               keep_checkpoints_without_metrics=False))
  return ocp.CheckpointManager(directory(workdir), options=ocp.CheckpointManagerOptions(
      preservation_policy=policies.AnyPreservationPolicy(keep),
      enable_async_checkpointing=True, **best))


def unfinished(workdir: str) -> list[str]:
  """Step folders of saves that never completed (a process killed while Orbax was writing)."""
  folder = directory(workdir)
  return sorted(n for n in os.listdir(folder) if '.orbax-checkpoint-tmp' in n) if (
      os.path.isdir(folder)) else []


def complete_steps(workdir: str) -> list[int]:
  """Steps whose save completed (Orbax renames a step's folder to its number when it is done)."""
  folder = directory(workdir)
  return sorted(int(n) for n in os.listdir(folder) if n.isdigit()) if os.path.isdir(folder) else []


def _set_aside(workdir: str, step: int, reason: str) -> None:
  """Renames a step that cannot be resumed from to ``<step>.unusable-<time>``: out of the way of
  the new saves, and kept for inspection rather than deleted."""
  source = os.path.join(directory(workdir), str(step))
  target = f'{source}.unusable-{time.strftime("%Y%m%d-%H%M%S")}'
  absl_logging.warning('Checkpoint %s %s; moved to %s, resuming from the previous one.', source,
                       reason, target)
  if jax.process_index() == 0:
    os.rename(source, target)


def first_line(error: Exception) -> str:
  lines = [l.strip() for l in str(error).splitlines() if l.strip()] or ['']
  return f'{type(error).__name__}: {lines[0][:160]}'


def restore(workdir: str, config: ml_collections.ConfigDict, abstract_state):
  """Restores the newest intact checkpoint onto the shardings of ``abstract_state``.

  ``abstract_state`` comes from `jax.eval_shape` with the wanted sharding on every leaf, so a
  checkpoint written on any number of devices restores onto this run's devices. Newer steps that
  cannot be read, or whose parameters are not finite, are reported with their path and set aside
  (renamed, not deleted) once an older intact step is found; half-written saves are never
  candidates. Returns None when there is no checkpoint.

  Raises:
    CheckpointError: checkpoints exist but none can be resumed from (then nothing is moved).
  """
  # A fresh manager per attempt: one that met a damaged step can misread the next.
  steps = manager(workdir, config, read_only=True).all_steps()
  unusable = []
  for step in reversed(steps):
    try:
      state = manager(workdir, config, read_only=True).restore(
          step, args=ocp.args.StandardRestore(abstract_state))
    except Exception as error:  # pylint: disable=broad-except
      unusable.append((step, f'cannot be read ({first_line(error)})'))
      continue
    if not all(bool(jnp.isfinite(leaf).all()) for leaf in jax.tree_util.tree_leaves(state.params)):
      unusable.append((step, 'holds non-finite parameters'))
      continue
    for bad_step, reason in unusable:
      _set_aside(workdir, bad_step, reason)
    return state
  if steps:
    raise CheckpointError(
        f'None of the checkpoints {steps} in {directory(workdir)} can be resumed from ('
        + '; '.join(f'{s} {r}' for s, r in unusable) + '); nothing was moved. Restore them from '
        'a backup, or use another --workdir to start afresh.')
  return None


def restore_variables(mngr: ocp.CheckpointManager, step: int, abstract: dict,
                      use_ema: bool = False) -> dict:
  """The model variables ``{'params', 'batch_stats'?}`` saved at ``step`` (the EMA parameters as
  'params' when ``use_ema``), onto the shardings ``abstract``'s leaves carry; the optimiser state
  is never read."""
  field = 'ema_params' if use_ema else 'params'
  wanted = {field if name == 'params' else name: tree for name, tree in abstract.items()}
  restore_args = ocp.checkpoint_utils.construct_restore_args(wanted)
  restored = mngr.restore(step, args=ocp.args.PyTreeRestore(wanted, restore_args=restore_args,
                                                            partial_restore=True))
  return {'params' if name == field else name: tree for name, tree in restored.items()}


def confirm_saved(mngr: ocp.CheckpointManager, workdir: str, step: int) -> None:
  """Waits for the save of ``step``; raises `CheckpointError` in one line unless it is complete.

  Orbax's own finalising thread consumes an asynchronous save's error (it is only logged), so
  completion is confirmed on disk, and the cause read from the manager's wait.
  """
  cause = 'it did not complete'
  try:
    mngr.wait_until_finished()
  except Exception as error:  # pylint: disable=broad-except
    lines = [l for l in str(error).splitlines() if l.strip()] or ['']
    # Orbax's messages end with the operating system's reason after the paths it tried.
    cause = lines[-1].rsplit(': ', 1)[-1].strip()[:200]
  if step not in complete_steps(workdir):
    raise write_failed(workdir, f'Saving checkpoint {step} in {directory(workdir)}', cause)


def write_failed(workdir: str, what: str, cause: str) -> CheckpointError:
  """The one-line error for a write that failed: what, why, and where a rerun resumes."""
  complete = complete_steps(workdir)
  return CheckpointError(
      f'{what} failed ({cause}); the last complete checkpoint is step '
      f'{complete[-1] if complete else "none"}. Free disk space or fix the permissions, then run '
      'the same command to resume.')


def close(mngr: ocp.CheckpointManager) -> None:
  """Waits for pending saves and releases Orbax's threads; a failed save does not stop this."""
  try:
    mngr.close()
  except Exception as error:  # pylint: disable=broad-except
    absl_logging.warning('Closing the checkpoint manager: %s', str(error).strip()[:200])


def save(mngr: ocp.CheckpointManager, state, metrics: dict | None = None) -> None:
  """Starts an async save of ``state`` at its step, with the eval ``metrics`` if any."""
  step = int(jax.device_get(state.step))
  # Orbax warns when a best-k manager saves without metrics (a checkpoint between evaluations).
  with quiet() if metrics is None else contextlib.nullcontext():
    mngr.save(step, args=ocp.args.StandardSave(state),
              metrics=None if metrics is None else {**metrics, 'step': step})


def pick_step(mngr: ocp.CheckpointManager, step, workdir: str, config) -> int:
  """The complete checkpoint ``step`` names ('latest', 'best' or an int); a one-line error that
  lists what there is otherwise."""
  available = mngr.all_steps()
  if not available:
    partial = unfinished(workdir)
    found = (f'only unfinished saves {partial} (a save interrupted before it completed)'
             if partial else 'no checkpoint yet')
    raise FileNotFoundError(
        f'{directory(workdir)} holds {found}; a run writes its first checkpoint at '
        f'step {config.checkpoint.every} (config.checkpoint.every): wait for it, or resume '
        f'training with --workdir={workdir}.')
  if step == 'latest':
    return available[-1]
  if step == 'best':
    if not config.checkpoint.best_metric:
      raise ValueError(f"step='best' needs a run with config.checkpoint.best_metric; {workdir} "
                       f"ranks none. Use step='latest' or one of {available}.")
    best = mngr.best_step()
    if best is None:
      raise ValueError(f"No checkpoint of {workdir} has saved eval metrics to rank; use "
                       f"step='latest' or one of {available}.")
    return best
  if step not in available:
    raise ValueError(f'{workdir} has no checkpoint at step {step!r}; its checkpoints are '
                     f"{available} (or use step='latest' / 'best').")
  return int(step)


class Saver:
  """A run's asynchronous saves, each confirmed complete on disk before the next one starts (or
  earlier, at a sync point where it has finished): a failed save stops the run at its next
  confirmation with `CheckpointError`, never later than the save after it."""

  def __init__(self, mngr: ocp.CheckpointManager, workdir: str):
    self.mngr, self.workdir = mngr, workdir
    self.unconfirmed = None  # the step of a save not yet confirmed complete

  def save(self, state, metrics: dict | None = None) -> None:
    self.confirm()
    save(self.mngr, state, metrics)
    self.unconfirmed = int(jax.device_get(state.step))

  def poll(self) -> None:
    """Confirms the pending save if it has finished; never waits."""
    if self.unconfirmed is not None and not self.mngr.is_saving_in_progress():
      self.confirm()

  def confirm(self) -> None:
    """Waits for the pending save, if any, and confirms it (`confirm_saved`)."""
    if self.unconfirmed is not None:
      step, self.unconfirmed = self.unconfirmed, None
      confirm_saved(self.mngr, self.workdir, step)
