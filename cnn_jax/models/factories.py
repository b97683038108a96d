"""The convolution and normalisation factories a model hands to its blocks."""

import functools
from typing import Any

from cnn_jax import layers as L


def scale_width(channels: int, multiplier: float) -> int:
  """A layer's channels under a width multiplier (MobileNet's alpha), at least one."""
  return max(1, int(channels * multiplier))


def round_channels(channels: float, divisor: int = 8) -> int:
  """Nearest multiple of ``divisor``, never more than 10% below ``channels`` (the channel rounding
  of MobileNet v2/v3 and EfficientNet)."""
  rounded = max(divisor, int(channels + divisor / 2) // divisor * divisor)
  return rounded + divisor if rounded < 0.9 * channels else rounded


def conv_and_norm(dtype: Any, axis_name: str | None, padding: str = 'SAME',
                  epsilon: float = 1e-5):
  """``(conv, norm)`` partials computing in ``dtype``, convolutions padded by ``padding``;
  BatchNorm (``epsilon``) reduces over ``axis_name``.

  ``axis_name`` is set by the training loop in per-device ('pmap') mode, so BatchNorm statistics
  are averaged over the devices; None otherwise.
  """
  return (functools.partial(L.Conv, dtype=dtype, padding=padding),
          functools.partial(L.BatchNorm, axis_name=axis_name, dtype=dtype, epsilon=epsilon))
