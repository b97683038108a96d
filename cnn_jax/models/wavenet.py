"""A WaveNet-style stack (van den Oord et al., 2016) of gated, causal, dilated 1-D convolutions.

Each layer sees only the present and the past: ``y[t]`` depends on ``x[:t + 1]``. Dilations
doubling per layer make the receptive field ``1 + (k - 1) * sum(dilations)`` grow exponentially
with depth at a linear cost. A classifier reads the features of the last time step (which, once
the receptive field covers the sequence, sees all of it) or pools them over time.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnn_jax import layers as L
from cnn_jax.models.registry import register_model

POOLING = ('last', 'avg', 'max')


class CausalStack(nn.Module):
  """[N, T, C] -> [N, T, skip_channels]: causal input conv, then gated residual layers.

  Layer ``i``: ``z = tanh(W_f * x) . sigmoid(W_g * x)`` (causal, dilation ``dilations[i]``);
  ``x <- x + 1x1(z)`` (residual) and ``skip += 1x1(z)``; the output is ``relu(skip)``.

  Attributes:
    channels: residual channels.
    skip_channels: channels of the summed skip connections.
    kernel_size: taps of every causal conv (2 in WaveNet).
    dilations: one per layer, e.g. (1, 2, 4, ..., 2**(L-1)), repeated for more depth.
  """
  channels: int = 32
  skip_channels: int = 64
  kernel_size: int = 2
  dilations: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
  dtype: Any = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = L.Conv(self.channels, self.kernel_size, padding='CAUSAL', dtype=self.dtype,
               name='causal_input')(x)
    skip = 0.0
    for index, dilation in enumerate(self.dilations):
      h = L.Conv(2 * self.channels, self.kernel_size, padding='CAUSAL', kernel_dilation=dilation,
                 dtype=self.dtype, name=f'dilated{index + 1}')(x)
      filtered, gate = jnp.split(h, 2, axis=-1)
      z = jnp.tanh(filtered) * nn.sigmoid(gate)
      skip = skip + L.Conv(self.skip_channels, 1, dtype=self.dtype, name=f'skip{index + 1}')(z)
      x = x + L.Conv(self.channels, 1, dtype=self.dtype, name=f'residual{index + 1}')(z)
    return nn.relu(skip)


@register_model('wavenet', input_shape=(40, 1), classes=10)  # sequences [T, C]
class WaveNet(nn.Module):
  """`CausalStack` -> 1x1 conv -> ReLU -> time pooling -> linear: a sequence classifier.

  Attributes:
    pooling: 'last' (the last step's features), 'avg' or 'max' over time.
  """
  num_classes: int = 10
  channels: int = 32
  skip_channels: int = 64
  kernel_size: int = 2
  dilations: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
  pooling: str = 'last'
  dtype: Any = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    del train  # no dropout or normalisation
    if self.pooling not in POOLING or x.ndim != 3:
      raise ValueError(f'WaveNet(pooling={self.pooling!r}) on input {tuple(x.shape)}: expected '
                       f'pooling in {POOLING} and sequences [N, T, C].')
    x = CausalStack(self.channels, self.skip_channels, self.kernel_size, self.dilations,
                    self.dtype, name='stack')(x)
    x = nn.relu(L.Conv(self.skip_channels, 1, dtype=self.dtype, name='post')(x))
    x = {'last': lambda: x[:, -1], 'avg': lambda: L.global_avg_pool(x),
         'max': lambda: L.global_max_pool(x)}[self.pooling]()
    return nn.Dense(self.num_classes, dtype=self.dtype, name='head')(x)
