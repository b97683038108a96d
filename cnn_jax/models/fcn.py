"""Fully convolutional networks (Long, Shelhamer & Darrell, 2015) on a VGG backbone.

The dense layers of VGG become convolutions (fc6: 7x7, fc7: 1x1), a 1x1 conv scores each class at
stride 32, and learned transposed convolutions (initialised to bilinear interpolation) bring the
scores back to the input resolution. FCN-16s and FCN-8s first fuse the scores, upsampled x2, with
scores read off pool4 (stride 16) and then pool3 (stride 8), recovering finer detail.
"""

import functools
from typing import Any

import flax.linen as nn
import jax

from cnn_jax import layers as L
from cnn_jax.models.dense import check_divisible
from cnn_jax.models.registry import image, register_model
from cnn_jax.models.vgg import VGGFeatures

STRIDES = (32, 16, 8)


class FCN(nn.Module):
  """[N, H, W, C] -> per-pixel logits [N, H, W, num_classes]; H and W multiples of 32.

  Attributes:
    num_classes: classes per pixel (21 for PASCAL VOC).
    output_stride: 32, 16 or 8: FCN-32s, -16s or -8s.
    depth, width, batch_norm: the VGG backbone's.
    dense_features: channels of fc6 and fc7.
    dropout: after fc6 and fc7.
  """
  num_classes: int = 21
  output_stride: int = 8
  depth: int = 16
  width: int = 64
  batch_norm: bool = False
  dense_features: int = 4096
  dropout: float = 0.5
  axis_name: str | None = None
  dtype: Any = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    if self.output_stride not in STRIDES:
      raise ValueError(f'FCN(output_stride={self.output_stride}): expected one of {STRIDES}.')
    check_divisible('FCN', x, 32, 'five 2x2 max-pools')
    pooled = VGGFeatures(self.depth, self.width, self.batch_norm, self.axis_name, self.dtype,
                         name='backbone')(x, train)
    y = pooled[-1]
    for name, kernel in (('fc6', 7), ('fc7', 1)):
      y = nn.relu(L.Conv(self.dense_features, kernel, dtype=self.dtype, name=name)(y))
      y = nn.Dropout(self.dropout, deterministic=not train)(y)
    y = L.Conv(self.num_classes, 1, dtype=self.dtype, name='score_pool5')(y)
    upsample = lambda factor, name: L.ConvTranspose(
        self.num_classes, 2 * factor, strides=factor, padding=factor // 2, use_bias=False,
        kernel_init=L.bilinear_kernel_init, dtype=self.dtype, name=name)
    stride = 32
    for skip, pool in ((16, 4), (8, 3)):
      if self.output_stride > skip:
        break
      # Zero-initialised skip scores: training starts from the coarser net's prediction.
      score = L.Conv(self.num_classes, 1, kernel_init=nn.initializers.zeros, dtype=self.dtype,
                     name=f'score_pool{pool}')(pooled[pool - 1])
      y = upsample(2, f'upsample_to_{skip}')(y) + score
      stride = skip
    return upsample(stride, 'upsample_to_input')(y)


for _stride in (32, 16, 8):
  register_model(f'fcn{_stride}s', functools.partial(FCN, output_stride=_stride), image(224), 'fcn',
                 classes=21)
