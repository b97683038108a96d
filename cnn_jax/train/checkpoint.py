"""Orbax checkpoints: async saves, the last K plus the best by an eval metric, automatic resume."""

import os

import jax
import ml_collections
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as policies


def directory(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), 'checkpoints')


def manager(workdir: str, config: ml_collections.ConfigDict | None = None,
            read_only: bool = False) -> ocp.CheckpointManager:
  """A manager over ``WORKDIR/checkpoints``; ``config.checkpoint`` sets retention."""
  if read_only or config is None:
    return ocp.CheckpointManager(directory(workdir), options=ocp.CheckpointManagerOptions(
        read_only=True, enable_async_checkpointing=False))
  ckpt = config.checkpoint
  keep = [policies.LatestN(n=ckpt.keep)]
  if ckpt.best_metric:
    keep.append(policies.BestN(get_metric_fn=lambda m: m[ckpt.best_metric],
                               reverse=ckpt.best_mode == 'min', n=1,
                               keep_checkpoints_without_metrics=False))
  return ocp.CheckpointManager(directory(workdir), options=ocp.CheckpointManagerOptions(
      preservation_policy=policies.AnyPreservationPolicy(keep),
      enable_async_checkpointing=True))


def restore(mngr: ocp.CheckpointManager, abstract_state, step: int | None = None):
  """Restores ``step`` (default: the latest) onto the shardings of ``abstract_state``.

  ``abstract_state`` comes from `jax.eval_shape` with the wanted sharding on every leaf, so a
  checkpoint written on any number of devices restores onto this run's devices.
  Returns None when there is no checkpoint.
  """
  step = mngr.latest_step() if step is None else step
  if step is None:
    return None
  return mngr.restore(step, args=ocp.args.StandardRestore(abstract_state))


def save(mngr: ocp.CheckpointManager, state, metrics: dict | None = None) -> None:
  """Starts an async save of ``state`` at its step, with the eval ``metrics`` if any."""
  mngr.save(int(jax.device_get(state.step)), args=ocp.args.StandardSave(state), metrics=metrics)
