"""Each loss against its formula, written out with numpy; metrics against hand counts."""

import jax.numpy as jnp
import numpy as np
import pytest

from cnn_jax.train import losses, metrics

LOGITS = np.array([[2.0, -1.0, 0.5], [0.1, 0.2, 3.0]], np.float32)
LABELS = np.array([0, 1])


def test_softmax_cross_entropy_is_minus_log_softmax():
  p = np.exp(LOGITS) / np.exp(LOGITS).sum(-1, keepdims=True)
  want = -np.log(p[np.arange(2), LABELS])
  np.testing.assert_allclose(losses.softmax_cross_entropy(LOGITS, LABELS), want, rtol=1e-6)
  smoothed = losses.softmax_cross_entropy(LOGITS, LABELS, label_smoothing=0.3)
  targets = np.eye(3)[LABELS] * 0.7 + 0.1
  np.testing.assert_allclose(smoothed, -(targets * np.log(p)).sum(-1), rtol=1e-6)


def test_sigmoid_binary_cross_entropy():
  z, y = np.array([[437.9], [-1.0]], np.float32), np.array([[1], [1]])
  # -y log s(z) - (1-y) log(1-s(z)), rearranged so that exp never overflows.
  want = (np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))).ravel()
  np.testing.assert_allclose(losses.sigmoid_binary_cross_entropy(z, y), want, atol=1e-6)
  assert float(losses.sigmoid_binary_cross_entropy(z, y)[0]) == pytest.approx(0.0)  # notes: l = 0


def test_multiclass_hinge():
  want = [max(0, -1 - 2 + 1) + max(0, 0.5 - 2 + 1), max(0, 0.1 - 0.2 + 1) + max(0, 3.0 - 0.2 + 1)]
  np.testing.assert_allclose(losses.multiclass_hinge(LOGITS, LABELS), want, rtol=1e-6)


def test_regression_losses():
  pred = np.array([[0.0, 2.0], [1.0, -3.0]], np.float32)
  target = np.array([[0.5, 0.0], [1.0, 0.0]], np.float32)
  e = pred - target
  np.testing.assert_allclose(losses.l1(pred, target), np.abs(e).mean(-1))
  np.testing.assert_allclose(losses.l2(pred, target), (e ** 2).mean(-1))
  huber = np.where(np.abs(e) <= 1, 0.5 * e ** 2, np.abs(e) - 0.5).mean(-1)
  np.testing.assert_allclose(losses.huber(pred, target), huber)


@pytest.mark.slow
def test_pixel_cross_entropy_and_mean_iou():
  logits = np.zeros((1, 2, 2, 3), np.float32)
  logits[0, 0, 0, 1] = logits[0, 1, 1, 2] = 5.0
  labels = np.array([[[1, 0], [0, 2]]])
  per_pixel = losses.softmax_cross_entropy(logits.reshape(-1, 3), labels.reshape(-1))
  np.testing.assert_allclose(losses.pixel_cross_entropy(logits, labels), [per_pixel.mean()], rtol=1e-6)
  confusion = metrics.confusion_matrix(jnp.asarray(logits), jnp.asarray(labels), jnp.ones(1))
  # Predictions: (0,0)->1 ok, (0,1)->0 ok, (1,0)->0 ok, (1,1)->2 ok: every class IoU 1.
  assert metrics.mean_iou(confusion) == 1.0
  labels[0, 0, 1] = 2
  confusion = metrics.confusion_matrix(jnp.asarray(logits), jnp.asarray(labels), jnp.ones(1))
  assert metrics.mean_iou(confusion) == pytest.approx((1 + 1 / 2 + 1 / 2) / 3)


def test_top_k():
  np.testing.assert_array_equal(metrics.correct_top_k(LOGITS, LABELS, 1), [1, 0])
  np.testing.assert_array_equal(metrics.correct_top_k(LOGITS, LABELS, 2), [1, 1])
