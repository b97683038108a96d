"""What a layer has learned: its filters, and the input patches that excite one of its channels."""

from collections.abc import Iterable
from typing import NamedTuple

import flax.linen as nn
import jax
import numpy as np

from cnn_jax import arithmetic
from cnn_jax.analysis import probe


def filters(variables: dict, layer: str) -> np.ndarray:
  """The kernels of the convolution at ``layer`` as [out_channels, *kernel_size, in_channels].

  One filter per row, ready for `plots.filter_grid` (an RGB image per filter when the input has 3
  channels). ``layer`` may name the convolution or a block holding exactly one convolution.
  """
  node = variables['params']
  for key in layer.split('/'):
    if key not in node:
      raise ValueError(f'No parameters at {layer!r}: {key!r} is not among {sorted(node)}.')
    node = node[key]
  kernels = [(path, leaf) for path, leaf in jax.tree_util.tree_leaves_with_path(node)
             if jax.tree_util.keystr(path[-1:]) == "['kernel']" and np.ndim(leaf) >= 3]
  if len(kernels) != 1:
    found = [jax.tree_util.keystr(p) for p, _ in kernels]
    raise ValueError(f'{layer!r} holds {len(kernels)} convolution kernels {found}; name one '
                     'convolution layer (e.g. ' + (f"'{layer}/...'" if kernels else "'Conv_0'") + ').')
  return np.moveaxis(np.asarray(kernels[0][1]), -1, 0)


class TopPatches(NamedTuple):
  """The ``k`` strongest activations of one channel, best first.

  Attributes:
    patches: [k, *field, C] the input region each unit sees (zeros where it hangs over the border).
    activations: [k] the channel's value at each unit.
    examples: [k] each unit's example, counted over all batches in order.
    positions: [k, rank] each unit's position in the layer's output.
  """
  patches: np.ndarray
  activations: np.ndarray
  examples: np.ndarray
  positions: np.ndarray


def top_patches(model: nn.Module, variables: dict, batches: Iterable, layer: str, channel: int,
                k: int = 9) -> TopPatches:
  """The ``k`` input patches that most activate ``channel`` of ``layer`` (Zeiler & Fergus).

  Each patch is cut to the unit's receptive field, located with `cnn_jax.arithmetic.layer_fields`
  (size, jump and start of the layer's units). ``batches`` yields arrays [N, *S, C] or dicts with
  an 'image'.
  """
  channel_values = jax.jit(lambda x: probe.feature_maps(model, variables, x, [layer])[layer][
      ..., channel])
  field, best = None, []  # best: (activation, example, position, patch)
  seen = 0
  for batch in batches:
    x = np.asarray(batch['image'] if isinstance(batch, dict) else batch)
    if field is None:
      fields = arithmetic.layer_fields(model, (1, *x.shape[1:]), train=False)
      if layer not in fields:
        raise ValueError(f'{layer!r} has no spatial receptive field; layers with one: '
                         f'{", ".join(fields)}.')
      field = fields[layer]
      size = [int(round(s)) for s in field.size]
    values = np.asarray(channel_values(x))
    flat = values.reshape(-1)
    order = np.argsort(-flat, kind='stable')[:k]
    padded = np.pad(x, [(0, 0), *[(s, s) for s in size], (0, 0)])
    for index in order:
      example, *position = np.unravel_index(index, values.shape)
      corner = [int(round(c + p * j - (s - 1) / 2)) + s for c, p, j, s in
                zip(field.start, position, field.jump, size)]
      window = tuple(slice(c, c + s) for c, s in zip(corner, size))
      best.append((float(flat[index]), seen + example, position, padded[(example, *window)]))
    best = sorted(best, key=lambda item: -item[0])[:k]
    seen += len(x)
  if not best:
    raise ValueError('top_patches got no batches.')
  return TopPatches(np.stack([b[3] for b in best]), np.asarray([b[0] for b in best]),
                    np.asarray([b[1] for b in best]), np.asarray([b[2] for b in best]))
