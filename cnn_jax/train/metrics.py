"""Metric sums of one batch (masked), to be added over batches and divided by the count."""

import jax
import jax.numpy as jnp
import numpy as np


def correct_top_k(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
  """[N] 1.0 where the label is among the k highest logits (ties count in the label's favour).

  Non-finite logits are always wrong (a diverged model must not look accurate). With per-pixel
  labels [N, *S] and logits [N, *S, K]: each example's fraction of correct pixels.
  """
  true = jnp.take_along_axis(logits, labels[..., None], axis=-1)
  finite = jnp.isfinite(logits).all(-1)
  correct = (((logits > true).sum(-1) < k) & finite).astype(jnp.float32)
  return correct.reshape(correct.shape[0], -1).mean(-1)


def confusion_matrix(logits: jax.Array, labels: jax.Array, mask: jax.Array) -> jax.Array:
  """[K, K] counts of (label, prediction) pairs over every pixel or example, mask-weighted."""
  classes = logits.shape[-1]
  predictions = logits.argmax(-1).reshape(-1)
  weights = jnp.broadcast_to(mask.reshape(mask.shape[0], *([1] * (labels.ndim - 1))),
                             labels.shape).reshape(-1)
  index = labels.reshape(-1) * classes + predictions
  return jnp.zeros(classes * classes).at[index].add(weights).reshape(classes, classes)


def mean_iou(confusion) -> float:
  """Mean over classes present (in labels or predictions) of TP / (TP + FP + FN)."""
  confusion = np.asarray(confusion)
  tp = np.diag(confusion)
  union = confusion.sum(0) + confusion.sum(1) - tp
  present = union > 0
  return float((tp[present] / union[present]).mean()) if present.any() else 0.0
