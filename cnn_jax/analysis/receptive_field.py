"""The receptive field measured on a real model: where the gradient of one unit is non-zero."""

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cnn_jax.analysis import probe


def _example_shape(model: nn.Module, variables: dict, input_shape) -> tuple[int, ...]:
  """``input_shape`` without a leading batch dimension of 1, checked against the model."""
  shape = tuple(input_shape)
  candidates = ([shape[1:]] if len(shape) > 2 and shape[0] == 1 else []) + [shape]
  for candidate in candidates:
    try:
      jax.eval_shape(lambda x: probe.outputs(model, variables, x),
                     jax.ShapeDtypeStruct((1, *candidate), jnp.float32))
      return candidate
    except Exception:  # pylint: disable=broad-except
      continue
  raise ValueError(f'The model does not take inputs of shape {shape}: give one example as '
                   '[*S, C] or [1, *S, C] with the channels of its data, e.g. (28, 28, 1).')


class EmpiricalField(NamedTuple):
  """Attributes:
    size: per spatial dimension, the extent of the input that reaches the unit.
    lo: per spatial dimension, the first input index inside that extent.
    support: [*S] True where some sample's gradient was non-zero.
  """
  size: tuple[int, ...]
  lo: tuple[int, ...]
  support: np.ndarray


def empirical_receptive_field(model: nn.Module, variables: dict, input_shape, layer=None,
                              samples: int = 32, seed: int = 0) -> EmpiricalField:
  """The input region with a non-zero gradient from the centre unit of ``layer``.

  Max-pooling passes each gradient to one input of its window and a ReLU blocks it at inactive
  units, so one input's support can be smaller than the field; the union over ``samples`` random
  inputs recovers it. For a stack of convolutions and poolings this equals the analytic field of
  `cnn_jax.arithmetic` (tested).

  Args:
    input_shape: one example, [*S, C], or [1, *S, C] as `arithmetic.summarize` takes it.
    layer: a layer name (see `feature_maps`); None means the model's output.
  """
  x = jax.random.normal(jax.random.key(seed), (samples, 1, *_example_shape(model, variables,
                                                                          input_shape)))

  def centre(x1):
    out = probe.outputs(model, variables, x1) if layer is None else probe.feature_maps(
        model, variables, x1, [layer])[layer]
    index = tuple(s // 2 for s in out.shape[1:-1])
    return out[(0, *index)].sum()

  grads = jax.jit(jax.vmap(jax.grad(centre)))(x)
  support = np.asarray(jnp.any(grads != 0, axis=(0, 1, grads.ndim - 1)))
  if not support.any():
    raise ValueError('No input reaches the centre unit: the gradient is zero everywhere.')
  sizes, los = [], []
  for axis in range(support.ndim):
    hit = np.nonzero(support.any(axis=tuple(a for a in range(support.ndim) if a != axis)))[0]
    sizes.append(int(hit[-1] - hit[0] + 1))
    los.append(int(hit[0]))
  return EmpiricalField(tuple(sizes), tuple(los), support)
