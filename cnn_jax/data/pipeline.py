"""grain input pipelines that yield global `jax.Array` batches laid out on the device mesh.

Training: each process reads its contiguous shard of the split, reshuffled every epoch from
``(seed, epoch)``; batches are augmented with vectorised numpy and normalised. Batch ``t`` of the
stream depends only on ``(seed, t)``, so a run resumed at step ``t`` sees exactly the batches an
uninterrupted run would have seen. Evaluation pads the last batch and marks padding with
``mask == 0``, so every example counts exactly once.
"""

import collections
import functools
import itertools
import sys
from collections.abc import Iterator

import grain
import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from PIL import Image

from cnn_jax.data import augment
from cnn_jax.data.sources import Source
from cnn_jax.errors import ConfigError


def _resize(example: dict, size: int) -> dict:
  """Resizes the shorter side to ``size`` and centre-crops (for variable-size images)."""
  image = example['image']
  height, width = image.shape[:2]
  scale = size / min(height, width)
  resized = np.asarray(Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).resize(
      (max(size, round(width * scale)), max(size, round(height * scale))), Image.BILINEAR))
  resized = resized.reshape(*resized.shape[:2], image.shape[-1])
  top, left = (resized.shape[0] - size) // 2, (resized.shape[1] - size) // 2
  return {**example, 'image': resized[top:top + size, left:left + size]}


def _normalize(images: np.ndarray, config: ml_collections.ConfigDict) -> np.ndarray:
  x = images.astype(np.float32)
  if images.dtype == np.uint8:
    x = x / 255.0
  return (x - np.asarray(config.mean, np.float32)) / np.asarray(config.std, np.float32)


def _augmentations(config: ml_collections.ConfigDict, spatial_rank: int) -> list:
  """The random transforms ``config`` sets for examples with ``spatial_rank`` spatial axes, in the
  order they apply; each maps (batch array, generator) to the batch array."""
  transforms = []
  if config.crop_padding:
    transforms.append(functools.partial(augment.random_crop, padding=config.crop_padding))
  if config.flip:
    transforms.append(augment.random_flip)
  if spatial_rank == 2 and (config.rotate_degrees or tuple(config.scale) != (1.0, 1.0)):
    transforms.append(functools.partial(augment.random_affine, max_degrees=config.rotate_degrees,
                                        scale_range=tuple(config.scale)))
  if spatial_rank == 1 and config.shift:
    transforms.append(functools.partial(augment.random_shift, max_shift=config.shift))
  return transforms


def _augment(batch: dict, rng: np.random.Generator, transforms: list) -> dict:
  x, labels = batch['image'], np.asarray(batch['label'])
  dense = labels.ndim > 1
  if dense:  # per-pixel labels ride along as one more channel, so they move with the pixels
    x = np.concatenate([x, labels[..., None].astype(x.dtype)], axis=-1)
  for transform in transforms:
    x = transform(x, rng)
  if dense:
    return {'image': x[..., :-1], 'label': x[..., -1].astype(labels.dtype)}
  return {**batch, 'image': x}


class _Positions:
  """The example indices of batch t of an endless stream over ``size`` examples, reshuffled
  every epoch: positions [t*B, (t+1)*B) of the epochs laid end to end, epoch e in the order of a
  permutation drawn from (seed, e). Drawn for a whole epoch at once (a per-example shuffle costs
  more than a small example's share of a train step)."""

  def __init__(self, size: int, batch: int, seed: int):
    self.size, self.batch, self.seed = size, batch, seed
    self._orders: dict[int, np.ndarray] = {}

  def __len__(self) -> int:
    return sys.maxsize  # endless

  def _order(self, epoch: int) -> np.ndarray:
    if epoch not in self._orders:
      if len(self._orders) > 2:  # batches may be read a little out of order by the threads
        del self._orders[min(self._orders)]
      self._orders[epoch] = np.random.default_rng([self.seed, epoch]).permutation(self.size)
    return self._orders[epoch]

  def __getitem__(self, step: int) -> np.ndarray:
    epochs, offsets = np.divmod(np.arange(step * self.batch, (step + 1) * self.batch), self.size)
    return np.concatenate([self._order(e)[offsets[epochs == e]] for e in np.unique(epochs)])


def _stack(examples: list[dict]) -> dict:
  return {name: np.stack([e[name] for e in examples]) for name in ('image', 'label')}


def _examples(source: Source, config: ml_collections.ConfigDict) -> grain.MapDataset:
  records = source.records if source.in_memory is None else source.in_memory
  dataset = grain.MapDataset.source(records)
  if None in source.example_shape:
    dataset = dataset.map(functools.partial(_resize, size=config.image_size))
  return dataset


def local_batch_size(global_batch: int, mesh: Mesh) -> int:
  """This process's share of a global batch, which must split evenly over the devices."""
  if global_batch % mesh.devices.size:
    raise ConfigError(f'The global batch size {global_batch} must be divisible by the number of '
                      f'devices ({mesh.devices.size}); pick a multiple of {mesh.devices.size}.')
  return global_batch // jax.process_count()


def _to_global(batch: dict, mesh: Mesh, batch_axis: int = 0) -> dict:
  # One call for the whole batch: JAX then transfers its arrays together.
  spec = PartitionSpec(*[None] * batch_axis, 'data')
  return jax.make_array_from_process_local_data(NamedSharding(mesh, spec), batch)


@jax.jit
def _unstack(group: dict) -> list[dict]:
  """The batches of a group that went to the devices in one transfer, each sharded as its group."""
  return [jax.tree.map(lambda a, i=i: a[i], group) for i in range(len(group['label']))]


def _prefetch(batches: Iterator[dict], mesh: Mesh, size: int = 2) -> Iterator[dict]:
  """Keeps ``size`` batches already transferred to the devices ahead of the consumer."""
  queue = collections.deque()
  for batch in batches:
    queue.append(_to_global(batch, mesh))
    if len(queue) > size:
      yield queue.popleft()
  yield from queue


def _read_options(config: ml_collections.ConfigDict) -> grain.ReadOptions:
  return grain.ReadOptions(num_threads=config.num_threads, prefetch_buffer_size=config.prefetch)


def steps_per_epoch(source: Source, global_batch: int, mesh: Mesh) -> int:
  """Full global batches in one pass over the training split (what each process can feed).

  Raises:
    ValueError: a batch that does not split over the devices, or a split smaller than one batch;
      the loop calls this before it builds or compiles anything.
  """
  local_batch = local_batch_size(global_batch, mesh)
  per_process = len(source) // jax.process_count()
  if per_process < local_batch:
    raise ConfigError(f'{source.name} {source.split} has {len(source)} examples, fewer than one '
                      f'batch of {global_batch} per process; lower config.batch_size.')
  return per_process // local_batch


def train_batches(source: Source, config: ml_collections.ConfigDict, mesh: Mesh,
                  start_step: int = 0) -> Iterator[dict]:
  """Endless training batches ``{'image', 'label'}`` starting at batch ``start_step``."""
  data = config.data
  local_batch = local_batch_size(config.batch_size, mesh)
  per_process = len(source) // jax.process_count()
  start = jax.process_index() * per_process
  # Batch t holds the examples at positions [t*B, (t+1)*B) of the epochs laid end to end.
  dataset = grain.MapDataset.source(_Positions(per_process, local_batch, config.seed))
  columns = source.in_memory
  if columns is None:
    examples = _examples(source, data)
    dataset = dataset.map(lambda batch: _stack([examples[int(i)] for i in start + batch]))
  else:  # each batch gathered from memory at once
    dataset = dataset.map(lambda batch: columns[start + batch])
  transforms = _augmentations(data.augment, len(source_shape(source, data)) - 1)
  if transforms:  # a random generator per batch costs a small batch's share of a step
    dataset = dataset.random_map(functools.partial(_augment, transforms=transforms),
                                 seed=config.seed + 1)
  dataset = dataset.map(lambda b: {'image': _normalize(b['image'], data),
                                    'label': np.asarray(b['label'], np.int32)})
  # Batch t of this stream depends on (seed, t) alone: resuming at start_step is exact.
  dataset = dataset[start_step:]
  # Onto the devices in grain's threads too: its prefetch buffer holds batches ready to use.
  group = data.batches_per_transfer
  if group == 1:
    return iter(dataset.map(lambda b: _to_global(b, mesh)).to_iter_dataset(_read_options(data)))
  # A transfer costs JAX about 45 us per array and device whatever its size, as much as making
  # a small batch: one transfer for a group and one program that splits it cost less.
  groups = dataset.batch(group).map(lambda g: _unstack(_to_global(g, mesh, batch_axis=1)))
  return itertools.chain.from_iterable(groups.to_iter_dataset(_read_options(data)))


def eval_batches(source: Source, config: ml_collections.ConfigDict, mesh: Mesh) -> Iterator[dict]:
  """One pass over ``source``: batches ``{'image', 'label', 'mask'}``, padding masked out.

  Every process yields the same number of batches (collectives need it); the shards' examples
  are contiguous, padded at the end.
  """
  data = config.data
  local_batch = local_batch_size(config.eval_batch_size, mesh)
  per_process = -(-len(source) // jax.process_count())
  start = jax.process_index() * per_process
  dataset = _examples(source, data)[start:min(start + per_process, len(source))]
  num_batches = -(-per_process // local_batch)

  def pad(batch: dict) -> dict:
    count = len(batch['label'])
    images = _normalize(np.asarray(batch['image']), data)
    filler = local_batch - count
    return {
        'image': np.concatenate([images, np.zeros((filler, *images.shape[1:]), images.dtype)]),
        'label': np.concatenate([np.asarray(batch['label'], np.int32),
                                 np.zeros((filler, *source.label_shape), np.int32)]),
        'mask': np.concatenate([np.ones(count, np.float32), np.zeros(filler, np.float32)]),
    }

  def batches() -> Iterator[dict]:
    produced = 0
    for batch in dataset.batch(local_batch).map(pad).to_iter_dataset(_read_options(data)):
      produced += 1
      yield batch
    empty = pad({'image': np.zeros((0, *source_shape(source, data)), np.uint8),
                 'label': np.zeros((0, *source.label_shape), np.int32)})
    for _ in range(num_batches - produced):
      yield empty

  return _prefetch(batches(), mesh)


def source_shape(source: Source, data: ml_collections.ConfigDict) -> tuple:
  """Shape of one preprocessed example (variable-size images are resized to image_size)."""
  if None in source.example_shape:
    return (data.image_size, data.image_size, source.example_shape[-1])
  return source.example_shape
