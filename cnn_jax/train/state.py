"""The training state: everything a run needs to resume lives here or derives from ``step``."""

from typing import Any

import flax
import jax


@flax.struct.dataclass
class TrainState:
  """A pytree of arrays (no functions), so Orbax saves and restores it as is.

  Attributes:
    step: optimiser steps taken; also the position in the training data stream.
    params: trainable parameters.
    batch_stats: BatchNorm running statistics (empty dict if the model has none).
    opt_state: Optax state.
    ema_params: exponential moving average of ``params`` (same as params when EMA is off).
    lr_scale: learning-rate multiplier set by reduce-on-plateau (1.0 otherwise).
    plateau_best: best eval metric seen by reduce-on-plateau.
    plateau_wait: evaluations since ``plateau_best`` improved.
    dynamic_scale: the float16 loss scale (`flax.training.dynamic_scale.DynamicScale`); None in
      float32 and bfloat16, whose range needs none.
  """
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  ema_params: Any
  lr_scale: jax.Array
  plateau_best: jax.Array
  plateau_wait: jax.Array
  dynamic_scale: Any = None

  def variables(self, use_ema: bool = False) -> dict:
    """The model's variables for ``model.apply``."""
    variables = {'params': self.ema_params if use_ema else self.params}
    if self.batch_stats:
      variables['batch_stats'] = self.batch_stats
    return variables
