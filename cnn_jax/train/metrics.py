"""Evaluation metrics by name: each a function of one batch's logits and labels giving one value
per example, registered with the labels it applies to (``@register_metric``); evaluation sums
them (masked) over a split and divides by the count. The loss and the mean IoU (from the summed
confusion matrix of per-pixel labels) are computed besides them."""

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

LABELS = ('example', 'pixel', 'any')
# Computed besides the registered metrics: the loss always, the mean IoU for per-pixel labels.
LOSS, MEAN_IOU = 'loss', 'mean_iou'


@dataclasses.dataclass(frozen=True)
class Metric:
  name: str
  fn: Callable  # (logits [N, *S, K], labels [N, *S]) -> [N], one value per example
  labels: str   # 'example': a class per example; 'pixel': a class per pixel; 'any'
  min_classes: int


METRICS: dict[str, Metric] = {}


def register_metric(name: str, labels: str = 'any', min_classes: int = 0) -> Callable:
  """Registers the decorated ``fn(logits, labels) -> [N]`` as metric ``name``, computed where the
  labels are of kind ``labels`` and the model has at least ``min_classes`` classes."""
  assert labels in LABELS, labels

  def add(fn: Callable) -> Callable:
    METRICS[name] = Metric(name, fn, labels, min_classes)
    return fn

  return add


def applicable(dense: bool, classes: int) -> list[Metric]:
  """The registered metrics computed for per-pixel (``dense``) or per-example labels."""
  kind = 'pixel' if dense else 'example'
  return [m for m in METRICS.values() if m.labels in (kind, 'any') and classes >= m.min_classes]


def names(dense: bool | None = None) -> tuple[str, ...]:
  """Every metric an evaluation may report (for ``dense`` labels, or for either kind)."""
  kinds = ('pixel', 'example') if dense is None else ('pixel' if dense else 'example',)
  registered = [m.name for m in METRICS.values() if m.labels == 'any' or m.labels in kinds]
  return (LOSS, *registered, *([MEAN_IOU] if dense is not False else []))


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


@register_metric('accuracy')
def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Top-1: the example's (or its pixels') share of correct predictions."""
  return correct_top_k(logits, labels, 1)


@register_metric('top5_accuracy', labels='example', min_classes=6)
def top5_accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  return correct_top_k(logits, labels, 5)
