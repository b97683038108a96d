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
import numpy as np

from cnn_jax import layers as L
from cnn_jax.models.registry import register_model


@register_model('deepbind', input_shape=(101, 4), classes=2)
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


def motif_match(kernel: np.ndarray, pwm: np.ndarray) -> tuple[float, int, int]:
  """The filter window that best matches a motif: ``(correlation, filter, offset)``.

  Pearson correlation between each filter's weights over ``len(pwm)`` consecutive positions
  (centred per position: only the preference among bases matters) and ``pwm - 0.25``, maximised
  over filters and offsets. ``kernel``: [width, 4, filters] (``params['motifs']['kernel']``);
  ``pwm``: [length, 4] base probabilities, ``length <= width``.
  """
  width, _, filters = kernel.shape
  length = len(pwm)
  reference = (pwm - 0.25).ravel()
  best = (-1.0, 0, 0)
  for index in range(filters):
    for offset in range(width - length + 1):
      window = kernel[offset:offset + length, :, index]
      window = window - window.mean(-1, keepdims=True)
      best = max(best, (float(np.corrcoef(window.ravel(), reference)[0, 1]), index, offset))
  return best
