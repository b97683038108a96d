"""Batch-level mixing inside the train step, on the devices: mixup (Zhang et al., 2018) and
cutmix (Yun et al., 2019). Each example is mixed with its neighbour in the batch (the batch is
shuffled, so the pairs are random; on a sharded batch the neighbour is one shift away, not a
gather), with one weight per batch. The step's loss is then ``w * loss(label) + (1 - w) *
loss(neighbour's label)``, which for cross-entropy is the loss against the soft target
``w * onehot(label) + (1 - w) * onehot(neighbour's label)`` (label smoothing composes)."""

import jax
import jax.numpy as jnp
import ml_collections

from cnn_jax.data.augment import register


def partner(x: jax.Array) -> jax.Array:
  """Each example's partner: the one before it in the batch."""
  return jnp.roll(x, 1, axis=0)


@register('mixup', 'step')
def mixup(key: jax.Array, images: jax.Array,
          params: ml_collections.ConfigDict) -> tuple[jax.Array, jax.Array]:
  """``(w * x + (1 - w) * partner(x), w)``, w ~ Beta(``params.mixup_alpha``, same)."""
  weight = jax.random.beta(key, params.mixup_alpha, params.mixup_alpha).astype(images.dtype)
  return weight * images + (1 - weight) * partner(images), weight


@register('cutmix', 'step', spatial_rank=2)
def cutmix(key: jax.Array, images: jax.Array,
           params: ml_collections.ConfigDict) -> tuple[jax.Array, jax.Array]:
  """A box of ``1 - w0`` of the area, w0 ~ Beta(``params.cutmix_alpha``, same), centred at a
  uniform position and clipped to the image, pasted from the partner; the weight returned is the
  share of the image left unpasted."""
  draw, rows_key, cols_key = jax.random.split(key, 3)
  height, width = images.shape[1:3]
  cut = jnp.sqrt(1 - jax.random.beta(draw, params.cutmix_alpha, params.cutmix_alpha))
  half_h, half_w = jnp.floor(height * cut / 2), jnp.floor(width * cut / 2)
  center_r = jax.random.randint(rows_key, (), 0, height)
  center_c = jax.random.randint(cols_key, (), 0, width)
  rows, cols = jnp.arange(height)[:, None], jnp.arange(width)[None, :]
  inside = ((rows >= center_r - half_h) & (rows < center_r + half_h) &
            (cols >= center_c - half_w) & (cols < center_c + half_w))
  mixed = jnp.where(inside[None, :, :, None], partner(images), images)
  return mixed, 1 - inside.mean(dtype=images.dtype)


def mix(key: jax.Array, images: jax.Array, ops: list,
        params: ml_collections.ConfigDict) -> tuple[jax.Array, jax.Array]:
  """``(images, weight)`` after one of the step-stage ``ops``, chosen uniformly per step."""
  if len(ops) == 1:
    return ops[0].fn(key, images, params)
  choose, key = jax.random.split(key)
  return jax.lax.switch(jax.random.randint(choose, (), 0, len(ops)),
                        [lambda k, x, op=op: op.fn(k, x, params) for op in ops], key, images)
