"""Attribution maps: which input values the target class's score depends on.

Every function takes ``(model, variables, x, target)`` with ``x`` a batch [N, *S, C] and
``target`` an int, one int per example, or None (the predicted class), and returns an array with
the shape of ``x`` (Grad-CAM: the layer's and the input's spatial shape). For dense prediction
(segmentation) the score is the target class's logit averaged over the pixels.
"""

from collections.abc import Callable
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnn_jax.analysis import backward_relu, probe


def _input_gradient(model, variables, x, target, rule: str | None = None) -> jax.Array:
  score = probe.score_fn(model, variables, probe.targets(model, variables, x, target))
  if rule is not None:
    score = backward_relu.with_backward_rule(score, x, rule)
  return jax.jit(jax.grad(score))(x)


def saliency(model: nn.Module, variables: dict, x: jax.Array, target=None) -> jax.Array:
  """The gradient of the target logit with respect to the input (Simonyan et al., 2014)."""
  return _input_gradient(model, variables, x, target)


def guided_backprop(model: nn.Module, variables: dict, x: jax.Array, target=None) -> jax.Array:
  """The input gradient with each ReLU passing back only positive gradients of active units
  (Springenberg et al., 2015). Needs a model with ReLUs."""
  return _input_gradient(model, variables, x, target, 'guided')


def deconvnet(model: nn.Module, variables: dict, x: jax.Array, target=None) -> jax.Array:
  """Zeiler & Fergus's reconstruction: each ReLU passes back the ReLU of the signal, max-pooling
  un-pools through the forward pass's switches, convolutions run transposed. Needs ReLUs."""
  return _input_gradient(model, variables, x, target, 'deconvnet')


def _batched_gradients(score: Callable, points: jax.Array, chunk: int) -> jax.Array:
  """Gradients of ``score`` at each of ``points`` [P, N, ...], ``chunk`` points per call."""
  return jax.jit(lambda p: jax.lax.map(jax.grad(score), p, batch_size=chunk))(points)


def integrated_gradients(model: nn.Module, variables: dict, x: jax.Array, target=None,
                         baseline: jax.Array | None = None, steps: int = 64,
                         chunk: int = 16) -> jax.Array:
  """``(x - baseline) * mean gradient along the straight path`` (Sundararajan et al., 2017).

  The path integral uses the trapezoid rule over ``steps`` intervals, so completeness holds to
  the rule's accuracy: the attributions of each example sum to ``f(x) - f(baseline)`` for the
  target logit. ``baseline`` defaults to zeros (the dataset mean after normalisation).
  """
  if steps < 1:
    raise ValueError(f'steps={steps}: integrated gradients needs at least 1 interval.')
  baseline = jnp.zeros_like(x) if baseline is None else jnp.broadcast_to(baseline, x.shape)
  score = probe.score_fn(model, variables, probe.targets(model, variables, x, target))
  alphas = jnp.linspace(0.0, 1.0, steps + 1)
  points = baseline + alphas.reshape(-1, *([1] * x.ndim)) * (x - baseline)
  weights = jnp.full(steps + 1, 1.0 / steps).at[jnp.array([0, -1])].set(0.5 / steps)
  grads = _batched_gradients(score, points, chunk)
  return (x - baseline) * jnp.tensordot(weights, grads, axes=1)


def smoothgrad(model: nn.Module, variables: dict, x: jax.Array, target=None, noise: float = 0.15,
               samples: int = 32, rng: int | jax.Array = 0, chunk: int = 16) -> jax.Array:
  """The saliency averaged over ``samples`` noisy copies of ``x`` (Smilkov et al., 2017).

  The noise's standard deviation is ``noise`` times each example's value range; ``rng`` is an
  int seed or a JAX key.
  """
  rng = jax.random.key(rng) if isinstance(rng, int) else rng
  score = probe.score_fn(model, variables, probe.targets(model, variables, x, target))
  spread = (x.max(axis=tuple(range(1, x.ndim)), keepdims=True)
            - x.min(axis=tuple(range(1, x.ndim)), keepdims=True))
  points = x + noise * spread * jax.random.normal(rng, (samples, *x.shape), x.dtype)
  return _batched_gradients(score, points, chunk).mean(0)


class GradCAM(NamedTuple):
  """``map`` [N, *S_layer] at the layer's resolution; ``upsampled`` [N, *S_input], bilinear."""
  map: jax.Array
  upsampled: jax.Array


def grad_cam(model: nn.Module, variables: dict, x: jax.Array, target=None,
             layer: str | None = None) -> GradCAM:
  """``relu(sum_k alpha_k A_k)`` with ``alpha_k`` the spatial mean of the target's gradient on
  channel ``k`` of ``layer``'s activation ``A`` (Selvaraju et al., 2017).

  ``layer`` defaults to the last layer whose output still has the input's spatial rank.
  """
  if layer is None:
    maps = probe.layer_shapes(model, variables, x)
    spatial = [name for name, a in maps.items() if a.ndim == x.ndim and a.shape[1:-1] != (1,) * (
        x.ndim - 2)]
    if not spatial:
      raise ValueError(f'{type(model).__name__} has no layer with a spatial output for Grad-CAM.')
    layer = spatial[-1]
  forward = probe.with_layer_delta(model, variables, layer)
  target = probe.targets(model, variables, x, target)

  @jax.jit
  def cam(x):
    activation = forward(x, 0.0)[1]
    score = lambda delta: probe.class_score(forward(x, delta)[0], target).sum()
    grads = jax.grad(score)(jnp.zeros_like(activation))
    alphas = grads.mean(axis=tuple(range(1, activation.ndim - 1)), keepdims=True)
    return jax.nn.relu((alphas * activation).sum(-1))

  coarse = cam(x)
  return GradCAM(coarse, jax.image.resize(coarse, (coarse.shape[0], *x.shape[1:-1]), 'bilinear'))
