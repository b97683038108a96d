"""Stochastic regularisers that act on whole feature maps or whole residual branches."""

import flax.linen as nn
import jax
import jax.numpy as jnp


class SpatialDropout(nn.Module):
  """Drops whole channels (feature maps) of [N, *S, C], scaling the kept ones by 1/(1-rate).

  Neighbouring activations of one map are strongly correlated, so element-wise dropout barely
  regularises a convolution; dropping the map does (Tompson et al., 2015).
  """
  rate: float
  rng_collection: str = 'dropout'

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
    spatial = tuple(range(1, x.ndim - 1))
    return nn.Dropout(self.rate, broadcast_dims=spatial, rng_collection=self.rng_collection)(
        x, deterministic=deterministic)


class StochasticDepth(nn.Module):
  """Drops a residual branch for a whole example with probability ``rate`` (Huang et al., 2016).

  Training keeps each example's branch with survival probability ``1 - rate`` and scales it by
  ``1/(1 - rate)``, so evaluation runs the full network unscaled. Apply it to the branch only:
  ``x + StochasticDepth(rate)(branch(x), deterministic=not train)``. Training draws from the
  ``'stochastic_depth'`` RNG stream: ``apply(..., rngs={'stochastic_depth': key})``.
  """
  rate: float
  rng_collection: str = 'stochastic_depth'

  @nn.compact
  def __call__(self, branch: jax.Array, deterministic: bool = True) -> jax.Array:
    if not 0.0 <= self.rate < 1.0:
      raise ValueError(f'StochasticDepth(rate={self.rate}): the drop rate must be in [0, 1).')
    if deterministic or self.rate == 0.0:
      return branch
    survival = 1.0 - self.rate
    keep = jax.random.bernoulli(self.make_rng(self.rng_collection), survival,
                                (branch.shape[0],) + (1,) * (branch.ndim - 1))
    return jnp.where(keep, branch / survival, jnp.zeros_like(branch))
