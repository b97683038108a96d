"""The contract every model meets, checked before anything compiles (`check_contract`):

* the constructor takes ``num_classes`` (the output features; per pixel for dense prediction);
* ``__call__(x, train)``: ``x`` is [N, *spatial, C]; ``train`` switches dropout and BatchNorm;
  it returns logits, or ``(logits, *aux_logits)`` in training (auxiliary heads, weighted by
  ``config.aux_loss_weight``);
* an ``axis_name`` field, passed to every BatchNorm, if the model has BatchNorm: the 'pmap'
  mode sets it so the statistics are averaged over the devices;
* a ``dtype`` field, passed to every layer, for ``config.compute_dtype`` other than float32.
"""

import dataclasses
import inspect

import flax.linen as nn

from cnn_jax.errors import ConfigError
from cnn_jax.models.registry import get_model


def build(name: str, num_classes: int, **kwargs) -> nn.Module:
  """Model ``name`` with ``num_classes``; a model that cannot be built so is a ConfigError."""
  try:
    model = get_model(name, num_classes=num_classes, **kwargs)
  except TypeError as error:
    if 'num_classes' in str(error):
      raise ConfigError(f'Model {name!r} takes no num_classes ({error}): a run builds every model '
                        "with its dataset's class count. Add the field `num_classes: int` and end "
                        'the model with nn.Dense(self.num_classes) (per-pixel labels: a 1x1 '
                        'convolution to num_classes channels).') from error
    raise ConfigError(f'Model {name!r} could not be built with '
                      f'{kwargs or "only num_classes"}: {error}. A model\'s constructor takes '
                      'num_classes and has a default for every other field.') from error
  if not isinstance(model, nn.Module):
    raise ConfigError(f'Model {name!r} built a {type(model).__name__}, not a flax.linen.Module.')
  return model


def check_contract(name: str, model: nn.Module, *, batch_norm_across_devices: bool = False,
                   needs_dtype: bool = False) -> None:
  """The module contract above, for what a run needs; raises ConfigError naming the fix.

  ``batch_norm_across_devices``: the model has BatchNorm and the run is per-device ('pmap').
  ``needs_dtype``: the run computes in another dtype than float32.
  """
  has = {f.name for f in dataclasses.fields(model)}
  if 'train' not in inspect.signature(type(model).__call__).parameters:
    raise ConfigError(f'Model {name!r}: __call__ must take a `train` argument (True in training: '
                      'dropout on, BatchNorm batch statistics); it takes '
                      f'{inspect.signature(type(model).__call__)}.')
  if batch_norm_across_devices and 'axis_name' not in has:
    raise ConfigError(f"Model {name!r} has BatchNorm but no `axis_name` field, so in "
                      "config.parallel.mode='pmap' each device would keep its own statistics. Add "
                      "`axis_name: str | None = None` and pass it to every nn.BatchNorm, or use "
                      "config.parallel.mode='jit'.")
  if needs_dtype and 'dtype' not in has:
    raise ConfigError(f'Model {name!r} has no `dtype` field, so config.compute_dtype cannot reach '
                      'its layers. Add `dtype: Any = None` and pass it to every layer, or set '
                      "config.compute_dtype='float32'.")
