"""DeepBind (Alipanahi et al., 2015): motif-detector convolutions over one-hot DNA.

Each of the ``num_motifs`` filters of width ``motif_length`` scans the sequence ([N, L, 4],
one-hot A, C, G, T) for one binding motif; its bias is a learned detection threshold before the
ReLU. Global max pooling keeps each motif's best match anywhere in the sequence (and optionally
global average pooling its overall density), and a small dense head scores binding.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnn_jax import layers as L


class DeepBind(nn.Module):
  """Attributes:
    num_classes: outputs (2: binding or not).
    num_motifs: motif detectors (convolution filters).
    motif_length: filter width in bases.
    hidden: dense units (0: the linear head straight from the pooled scores).
    avg_pool: also feed each motif's mean activation to the head.
    dropout: before the head.
  """
  num_classes: int = 2
  num_motifs: int = 16
  motif_length: int = 24
  hidden: int = 32
  avg_pool: bool = False
  dropout: float = 0.5
  dtype: Any = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    if x.ndim != 3 or x.shape[-1] != 4:
      raise ValueError(f'DeepBind expects one-hot DNA [N, L, 4]; got shape {tuple(x.shape)}.')
    scores = nn.relu(L.Conv(self.num_motifs, self.motif_length, padding='VALID', dtype=self.dtype,
                            name='motifs')(x))
    pooled = L.global_max_pool(scores)
    if self.avg_pool:
      pooled = jnp.concatenate([pooled, L.global_avg_pool(scores)], axis=-1)
    if self.hidden:
      pooled = nn.relu(nn.Dense(self.hidden, dtype=self.dtype, name='hidden')(pooled))
    pooled = nn.Dropout(self.dropout, deterministic=not train)(pooled)
    return nn.Dense(self.num_classes, dtype=self.dtype, name='head')(pooled)
