"""Change the input, watch the output: occlusion maps (images) and mutation maps (sequences).

All perturbed inputs of a batch are evaluated in one jitted call (`jax.lax.map` over chunks of
positions), not a Python loop per position.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from cnn_jax import arithmetic
from cnn_jax.analysis import probe


def occlusion(model: nn.Module, variables: dict, x: jax.Array, target=None, patch=8, stride=4,
              fill: float = 0.0, chunk: int = 32) -> jax.Array:
  """The target-class probability with one patch of the input replaced by ``fill`` (Zeiler &
  Fergus, 2014): low values mark the regions the prediction depends on.

  Args:
    x: [N, *S, C]; patch, stride: an int or one per spatial dimension.
    fill: the value of the occluder (0.0 is the dataset mean after normalisation).

  Returns:
    [N, P_1, P_2, ...]: entry ``(n, i, j, ...)`` is the probability when the patch whose first
    corner is at ``(i*stride, j*stride, ...)`` is occluded; ``P = (size - patch) // stride + 1``.
    For dense prediction, the target's probability averaged over the pixels.
  """
  rank = x.ndim - 2
  patch = arithmetic.as_tuple(patch, rank, 'patch')
  stride = arithmetic.as_tuple(stride, rank, 'stride')
  counts = tuple((s - p) // st + 1 for s, p, st in zip(x.shape[1:-1], patch, stride))
  if min(counts) < 1 or min(stride) < 1:
    raise ValueError(f'An occluding patch {patch} with stride {stride} does not fit inputs of '
                     f'spatial size {x.shape[1:-1]}; use a patch no larger than the input and a '
                     'positive stride.')
  target = probe.targets(model, variables, x, target)
  grid = jnp.meshgrid(*[jnp.arange(c) * st for c, st in zip(counts, stride)], indexing='ij')
  corners = jnp.stack(grid, -1).reshape(-1, rank)
  block = jnp.full((x.shape[0], *patch, x.shape[-1]), fill, x.dtype)

  def probability(corner):
    occluded = lax.dynamic_update_slice(x, block, (0, *corner, 0))
    return probe.class_score(jax.nn.softmax(probe.outputs(model, variables, occluded)), target)

  probabilities = jax.jit(lambda c: lax.map(probability, c, batch_size=chunk))(corners)
  return probabilities.T.reshape(x.shape[0], *counts)


def mutation_map(model: nn.Module, variables: dict, x: jax.Array, target=1,
                 chunk: int = 64) -> jax.Array:
  """DeepBind's mutation map: how the target logit changes when position ``t`` becomes letter ``a``.

  Args:
    x: one-hot sequences [N, L, A] (e.g. A = 4 for DNA).
    target: the class whose logit is watched (1: 'binds' for the motifs task).

  Returns:
    [N, L, A]: ``logit(mutant) - logit(x)``; 0 where ``a`` is already the letter at ``t``.
  """
  if x.ndim != 3:
    raise ValueError(f'mutation_map expects one-hot sequences [N, L, A]; got shape {x.shape}.')
  length, alphabet = x.shape[1:]
  target = probe.targets(model, variables, x, target)
  score = lambda x: probe.class_score(probe.outputs(model, variables, x), target)
  letters = jnp.eye(alphabet, dtype=x.dtype)
  pairs = jnp.stack(jnp.meshgrid(jnp.arange(length), jnp.arange(alphabet), indexing='ij'),
                    -1).reshape(-1, 2)

  @jax.jit
  def changes(pairs):
    reference = score(x)
    return lax.map(lambda pair: score(x.at[:, pair[0], :].set(letters[pair[1]])) - reference,
                   pairs, batch_size=chunk)

  changes = changes(pairs)
  return jnp.where(x > 0, 0.0, changes.T.reshape(x.shape[0], length, alphabet))
