"""SegNet (Badrinarayanan, Kendall & Cipolla, 2017): a VGG encoder and its mirror-image decoder.

The decoder upsamples by un-pooling: each value goes back to where the encoder's max-pool took its
maximum from (the saved pooling indices), which keeps boundaries sharp without learning to
upsample; the following convolutions densify the sparse maps.
"""

import functools
from typing import Any

import flax.linen as nn
import jax

from cnn_jax import layers as L
from cnn_jax.models.dense import check_divisible
from cnn_jax.models.factories import conv_and_norm
from cnn_jax.models.vgg import DEPTHS
from cnn_jax.models.registry import image, register_model


@register_model('segnet', input_shape=image(224), classes=12)
class SegNet(nn.Module):
  """[N, H, W, C] -> per-pixel logits; H and W multiples of ``2 ** len(stages)``.

  Attributes:
    num_classes: classes per pixel.
    depth: VGG layout of the encoder (16 in the paper: 13 convs).
    width: channels of the first stage (doubling per stage up to 8x).
    num_stages: encoder stages used (5 in the paper; fewer for small inputs).
  """
  num_classes: int = 12
  depth: int = 16
  width: int = 64
  num_stages: int = 5
  axis_name: str | None = None
  dtype: Any = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    counts = DEPTHS[self.depth][:self.num_stages]
    check_divisible('SegNet', x, 2 ** len(counts), 'num_stages max-pools')
    conv, norm = conv_and_norm(self.dtype, self.axis_name)
    unit = functools.partial(L.ConvNormAct, conv=conv, norm=norm)
    widths = [self.width * 2 ** min(stage, 3) for stage in range(len(counts))]
    saved = []
    for stage, (count, width) in enumerate(zip(counts, widths)):
      for index in range(count):
        x = unit(width, 3, name=f'encoder{stage + 1}_{index + 1}')(x, train)
      shape = x.shape[1:-1]
      x, indices = L.max_pool_with_indices(x, 2, strides=2)
      saved.append((indices, shape))
    for stage in reversed(range(len(counts))):
      indices, shape = saved[stage]
      x = L.max_unpool(x, indices, shape)
      # Mirror of the encoder: the stage's last conv narrows to the next (shallower) stage's width.
      out = widths[stage - 1] if stage > 0 else widths[0]
      for index in range(counts[stage]):
        features = out if index == counts[stage] - 1 else widths[stage]
        x = unit(features, 3, name=f'decoder{stage + 1}_{index + 1}')(x, train)
    return conv(self.num_classes, 1, name='classifier')(x)
