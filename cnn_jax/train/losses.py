"""Per-example losses. Each returns shape [N]; reduce with a (masked) mean in the step."""

import jax
import jax.numpy as jnp
import optax


def softmax_cross_entropy(logits: jax.Array, labels: jax.Array,
                          label_smoothing: float = 0.0) -> jax.Array:
  """``-sum_k y_k log softmax(z)_k`` with integer labels [N] and logits [N, K]."""
  targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing) if (
      label_smoothing) else jax.nn.one_hot(labels, logits.shape[-1])
  return optax.softmax_cross_entropy(logits, targets)


def sigmoid_binary_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """``-y log s(z) - (1-y) log(1-s(z))`` summed over outputs; labels in {0, 1}, same shape."""
  return optax.sigmoid_binary_cross_entropy(logits, labels.astype(logits.dtype)).reshape(
      logits.shape[0], -1).sum(-1)


def multiclass_hinge(logits: jax.Array, labels: jax.Array, margin: float = 1.0) -> jax.Array:
  """``sum_{i != k} max(0, z_i - z_k + margin)`` for the true class k (Weston-Watkins SVM)."""
  true = jnp.take_along_axis(logits, labels[:, None], axis=-1)
  violations = jnp.maximum(0.0, logits - true + margin)
  return (violations * (1 - jax.nn.one_hot(labels, logits.shape[-1]))).sum(-1)


def _per_example(values: jax.Array) -> jax.Array:
  return values.reshape(values.shape[0], -1).mean(-1)


def l1(predictions: jax.Array, targets: jax.Array) -> jax.Array:
  """Mean absolute error per example."""
  return _per_example(jnp.abs(predictions - targets))


def l2(predictions: jax.Array, targets: jax.Array) -> jax.Array:
  """Mean squared error per example."""
  return _per_example((predictions - targets) ** 2)


def huber(predictions: jax.Array, targets: jax.Array, delta: float = 1.0) -> jax.Array:
  """Huber / smooth L1: ``0.5 e^2`` for ``|e| <= delta``, ``delta (|e| - 0.5 delta)`` beyond."""
  return _per_example(optax.huber_loss(predictions, targets, delta=delta))


def pixel_cross_entropy(logits: jax.Array, labels: jax.Array,
                        label_smoothing: float = 0.0) -> jax.Array:
  """Segmentation: softmax cross-entropy at every pixel, averaged per example.

  logits [N, *S, K], labels [N, *S].
  """
  classes = logits.shape[-1]
  flat = softmax_cross_entropy(logits.reshape(-1, classes), labels.reshape(-1), label_smoothing)
  return flat.reshape(logits.shape[0], -1).mean(-1)


CLASSIFICATION_LOSSES = {
    'softmax_cross_entropy': softmax_cross_entropy,
    'multiclass_hinge': lambda logits, labels, label_smoothing=0.0: multiclass_hinge(logits, labels),
    'pixel_cross_entropy': pixel_cross_entropy,
}
