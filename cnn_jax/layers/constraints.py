"""Hard kernel constraints (projections), as functions and as an Optax transformation."""

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import optax


def _filter_norms(kernel: jax.Array, axis: Sequence[int] | None) -> jax.Array:
  # One norm per output filter: over every axis but the last unless told otherwise.
  axis = tuple(range(kernel.ndim - 1)) if axis is None else tuple(axis)
  return jnp.sqrt(jnp.sum(kernel ** 2, axis=axis, keepdims=True))


def max_norm(kernel: jax.Array, max_value: float = 3.0,
             axis: Sequence[int] | None = None) -> jax.Array:
  """Rescales every filter whose L2 norm exceeds ``max_value`` back onto that norm (Keras MaxNorm)."""
  norms = _filter_norms(kernel, axis)
  return kernel * jnp.minimum(1.0, max_value / jnp.maximum(norms, 1e-12))


def unit_norm(kernel: jax.Array, axis: Sequence[int] | None = None) -> jax.Array:
  """Rescales every filter to unit L2 norm."""
  return kernel / jnp.maximum(_filter_norms(kernel, axis), 1e-12)


def constrain_kernels(constraint: Callable[[jax.Array], jax.Array]) -> optax.GradientTransformation:
  """An Optax transformation that keeps every ``kernel`` parameter inside ``constraint``.

  Chain it last: it turns the update ``u`` into ``constraint(params + u) - params``, so after
  ``optax.apply_updates`` each kernel is the projection of the unconstrained step.
  """

  def update(updates, state, params=None):
    if params is None:
      raise ValueError('constrain_kernels needs the parameters: call tx.update(grads, state, params).')

    def project(path, update, param):
      is_kernel = getattr(path[-1], 'key', None) == 'kernel'
      return constraint(param + update) - param if is_kernel else update

    return jax.tree_util.tree_map_with_path(project, updates, params), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)
