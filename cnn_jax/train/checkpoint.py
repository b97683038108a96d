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

# The parts of a `TrainState` that inference needs (never the optimiser state).
INFERENCE_FIELDS = ('params', 'batch_stats', 'ema_params')


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
    return ocp.CheckpointManager(directory(workdir), options=ocp.CheckpointManagerOptions(
        read_only=True, enable_async_checkpointing=False, **best))
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


def has_checkpoints(workdir: str) -> bool:
  folder = directory(workdir)
  return os.path.isdir(folder) and any(n.isdigit() for n in os.listdir(folder))


def _set_aside(mngr: ocp.CheckpointManager, step: int, reason: str) -> None:
  """Renames a step that cannot be resumed from to ``<step>.unusable-<time>``: out of the way of
  the new saves, and kept for inspection rather than deleted."""
  source = os.path.join(str(mngr.directory), str(step))
  target = f'{source}.unusable-{time.strftime("%Y%m%d-%H%M%S")}'
  absl_logging.warning('Checkpoint %s %s; moved to %s, resuming from the previous one.', source,
                       reason, target)
  if jax.process_index() == 0:
    os.rename(source, target)


def restore(mngr: ocp.CheckpointManager, abstract_state):
  """Restores the newest intact checkpoint onto the shardings of ``abstract_state``.

  ``abstract_state`` comes from `jax.eval_shape` with the wanted sharding on every leaf, so a
  checkpoint written on any number of devices restores onto this run's devices. A step that
  cannot be read, or whose parameters are not finite, is reported with its path and set aside
  (renamed, not deleted); half-written saves are never candidates. Returns None when there is no
  checkpoint.

  Raises:
    RuntimeError: checkpoints exist but none can be resumed from.
  """
  steps = mngr.all_steps()
  for step in reversed(steps):
    try:
      state = mngr.restore(step, args=ocp.args.StandardRestore(abstract_state))
    except Exception as error:  # pylint: disable=broad-except
      _set_aside(mngr, step, f'cannot be read ({type(error).__name__}: '
                 f'{str(error).strip().splitlines()[0][:160] if str(error).strip() else ""})')
      continue
    if not all(bool(jnp.isfinite(leaf).all()) for leaf in jax.tree_util.tree_leaves(state.params)):
      _set_aside(mngr, step, 'holds non-finite parameters')
      continue
    if step != steps[-1]:
      mngr.reload()
    return state
  if steps:
    raise RuntimeError(f'None of the checkpoints {steps} in {mngr.directory} can be resumed from '
                       '(each is set aside beside them); restore them from a backup, or use '
                       'another --workdir to start afresh.')
  return None


def restore_inference(mngr: ocp.CheckpointManager, step: int, abstract: dict) -> dict:
  """Restores only ``abstract``'s fields of a saved `TrainState` (a subset of INFERENCE_FIELDS),
  onto the shardings its leaves carry; the optimiser state is never read."""
  restore_args = ocp.checkpoint_utils.construct_restore_args(abstract)
  return mngr.restore(step, args=ocp.args.PyTreeRestore(abstract, restore_args=restore_args,
                                                        partial_restore=True))


class CheckpointError(RuntimeError):
  """A checkpoint could not be written: training stops rather than run on unsaved."""


def _complete_steps(workdir: str) -> list[int]:
  folder = directory(workdir)
  return sorted(int(n) for n in os.listdir(folder) if n.isdigit()) if os.path.isdir(folder) else []


def raise_failed_save(mngr: ocp.CheckpointManager, workdir: str) -> None:
  """Raises `CheckpointError` in one line if an asynchronous save has failed."""
  try:
    mngr.check_for_errors()
  except Exception as error:  # pylint: disable=broad-except
    cause = str(error).strip().splitlines()[-1][:200] if str(error).strip() else ''
    complete = _complete_steps(workdir)
    raise CheckpointError(
        f'Saving a checkpoint in {directory(workdir)} failed ({type(error).__name__}: {cause}); '
        f'the last complete checkpoint is step {complete[-1] if complete else "none"}. Free '
        'disk space or fix the permissions, then run the same command to resume.') from None


def close(mngr: ocp.CheckpointManager) -> None:
  """Waits for pending saves and releases Orbax's threads; a failed save does not stop this."""
  try:
    mngr.close()
  except Exception as error:  # pylint: disable=broad-except
    absl_logging.warning('Closing the checkpoint manager: %s', str(error).strip()[:200])


def save(mngr: ocp.CheckpointManager, state, metrics: dict | None = None) -> None:
  """Starts an async save of ``state`` at its step, with the eval ``metrics`` if any."""
  step = int(jax.device_get(state.step))
  mngr.save(step, args=ocp.args.StandardSave(state),
            metrics=None if metrics is None else {**metrics, 'step': step})
