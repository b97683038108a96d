"""The convolution and normalisation factories a model hands to its blocks."""

import functools
from typing import Any

from cnn_jax import layers as L


def scale_width(channels: int, multiplier: float) -> int:
  """A layer's channels under a width multiplier (MobileNet's alpha), at least one."""
  return max(1, int(channels * multiplier))


def conv_and_norm(dtype: Any, axis_name: str | None):
  """``(conv, norm)`` partials computing in ``dtype``; BatchNorm reduces over ``axis_name``.

  ``axis_name`` is set by the training loop in per-device ('pmap') mode, so BatchNorm statistics
  are averaged over the devices; None otherwise.
  """
  return (functools.partial(L.Conv, dtype=dtype),
          functools.partial(L.BatchNorm, axis_name=axis_name, dtype=dtype))
