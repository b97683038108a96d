"""grain input pipelines that yield global `jax.Array` batches laid out on the device mesh.

Training: each process reads its contiguous shard of the split, reshuffled every epoch from
``(seed, epoch)``. Examples are decoded, cropped and augmented one at a time where the config asks
for it (in worker processes, one per core by default), then whole batches with vectorised numpy;
the raw pixels (uint8 for images) go to the devices, which normalise them. Batch ``t`` of the
stream depends only on ``(seed, t)``, so a run resumed at step ``t`` sees exactly the batches an
uninterrupted run would have seen. Evaluation pads the last batch and marks padding with
``mask == 0``, so every example counts exactly once; variable-size images are resized and
centre-cropped.
"""

import functools
import os
import sys
from collections.abc import Iterator

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import flags
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from cnn_jax.data import augment, images
from cnn_jax.data.sources import Source
from cnn_jax.errors import ConfigError


def normalize(images, data: ml_collections.ConfigDict):
  """``(x - mean) / std`` in float32, uint8 pixels first scaled to [0, 1]; numpy or jax arrays
  (the pipeline applies it on the devices, after the transfer of the raw pixels)."""
  xp = np if isinstance(images, np.ndarray) else jnp
  x = images.astype(xp.float32)
  if images.dtype == xp.uint8:
    x = x / 255.0
  return (x - xp.asarray(data.mean, xp.float32)) / xp.asarray(data.std, xp.float32)


def _augment(batch: dict, rng: np.random.Generator, ops: list,
             params: ml_collections.ConfigDict) -> dict:
  """The batch-stage ``ops`` in order; per-pixel labels move with the pixels."""
  x, labels = batch['image'], np.asarray(batch['label'])
  dense = labels.ndim > 1
  if dense:  # per-pixel labels ride along as one more channel, so they move with the pixels
    x = np.concatenate([x, labels[..., None].astype(x.dtype)], axis=-1)
  for op in ops:
    x = op.fn(x, rng, params)
  if dense:
    return {'image': x[..., :-1], 'label': x[..., -1].astype(labels.dtype)}
  return {**batch, 'image': x}


def plan(source: Source, data: ml_collections.ConfigDict) -> dict[str, list]:
  """``data.augment.ops`` by stage, checked against the source's examples and labels."""
  stages = augment.plan(data.augment.ops, len(source_shape(source, data)) - 1)
  per_example = [op.name for op in stages['decode'] + stages['example'] + stages['step']]
  if source.label_shape and per_example:
    raise ConfigError(f'{source.name} has per-pixel labels, which {per_example} would not move '
                      'with the pixels; use the batch-stage ops (random_crop, flip, affine).')
  return stages


def _preparer(source: Source, data: ml_collections.ConfigDict, stages: dict):
  """``prepare(image, rng) -> image``: the decode stage (or, for variable-size images, the
  evaluation centre crop), then the example stage; None when there is nothing to do."""
  variable = None in source.example_shape
  if not (variable or stages['decode'] or stages['example']):
    return None
  size, channels = data.image_size, source.example_shape[-1]

  def prepare(image, rng: np.random.Generator | None) -> np.ndarray:
    if stages['decode']:
      image = stages['decode'][0].fn(image, rng, data.augment, size, channels)
    elif variable:
      image = images.center_crop(image, size, data.crop_fraction, channels)
    for op in stages['example']:
      image = op.fn(image, rng, data.augment)
    return image

  return prepare


def workers(source: Source, data: ml_collections.ConfigDict) -> int:
  """Worker processes for the per-example work: ``data.workers``, or with -1 one per core when
  examples are decoded or augmented one at a time, none otherwise (a batch gathered from memory
  costs less than handing it between processes)."""
  if data.workers >= 0:
    return data.workers
  return (os.cpu_count() or 1) if _preparer(source, data, plan(source, data)) else 0


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


@functools.partial(jax.jit, static_argnames=('mean', 'std', 'grouped'))
def _finish(batch: dict, mean: tuple, std: tuple, grouped: bool) -> dict | list[dict]:
  """A transferred batch normalised on the devices (or the batches of a group that went in one
  transfer, split apart), each sharded as it arrived."""
  data = ml_collections.ConfigDict({'mean': mean, 'std': std})
  finish = lambda b: {**b, 'image': normalize(b['image'], data)}
  if grouped:
    return [finish(jax.tree.map(lambda a, i=i: a[i], batch)) for i in range(len(batch['label']))]
  return finish(batch)


def _device_batches(host: grain.MapDataset, mesh: Mesh, data: ml_collections.ConfigDict,
                    processes: int, group: int = 1) -> Iterator[dict]:
  """``host`` batches (or groups of ``group``) on the devices, normalised there. With worker
  processes (one thread each: a process per core), the transfers run in a thread of their own;
  without, in grain's ``data.num_threads`` threads, whose buffer then holds batches ready to
  use."""
  finish = functools.partial(_finish, mean=tuple(data.mean), std=tuple(data.std),
                             grouped=group > 1)
  on_devices = lambda b: finish(_to_global(b, mesh, batch_axis=int(group > 1)))
  if processes:
    if not flags.FLAGS.is_parsed():  # grain's workers read its absl flags (defaults will do)
      flags.FLAGS.mark_as_parsed()
    host = host.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=2))
    host = host.mp_prefetch(grain.MultiprocessingOptions(num_workers=processes,
                                                         per_worker_buffer_size=2))
    stream = grain.experimental.ThreadPrefetchIterDataset(host.map(on_devices),
                                                          prefetch_buffer_size=max(data.prefetch, 1))
  else:
    stream = host.to_iter_dataset(_read_options(data)).map(on_devices)
  return _closing(iter(stream), group > 1)


def _closing(iterator, grouped: bool) -> Iterator[dict]:
  """The batches of grain's ``iterator``, which is closed (its threads and worker processes
  ended, their shared memory freed) when the stream is exhausted or closed."""
  try:
    for item in iterator:
      yield from item if grouped else (item,)
  finally:
    iterator.close()


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
  stages = plan(source, data)
  prepare = _preparer(source, data, stages)
  # Batch t holds the examples at positions [t*B, (t+1)*B) of the epochs laid end to end.
  dataset = grain.MapDataset.source(_Positions(per_process, local_batch, config.seed))
  columns = source.in_memory
  if prepare is not None:  # one example at a time, its random draws from (seed, t) alone
    records = source.records if columns is None else columns
    dataset = dataset.random_map(lambda batch, rng: _stack([
        {**e, 'image': prepare(e['image'], rng)} for e in (records[int(i)] for i in start + batch)]),
                                 seed=config.seed + 2)
  elif columns is None:
    dataset = dataset.map(lambda batch: _stack([source.records[int(i)] for i in start + batch]))
  else:  # each batch gathered from memory at once
    dataset = dataset.map(lambda batch: columns[start + batch])
  if stages['batch']:  # a random generator per batch costs a small batch's share of a step
    dataset = dataset.random_map(functools.partial(_augment, ops=stages['batch'],
                                                   params=data.augment), seed=config.seed + 1)
  dataset = dataset.map(lambda b: {'image': b['image'], 'label': np.asarray(b['label'], np.int32)})
  # Batch t of this stream depends on (seed, t) alone: resuming at start_step is exact.
  dataset = dataset[start_step:]
  # Transfers cost JAX a fixed time per array and device whatever their size: tiny batches go to
  # the devices in groups, split there by one small program.
  group = data.batches_per_transfer
  if group > 1:
    dataset = dataset.batch(group)
  return _device_batches(dataset, mesh, data, workers(source, data), group)


def eval_batches(source: Source, config: ml_collections.ConfigDict, mesh: Mesh) -> Iterator[dict]:
  """One pass over ``source``: batches ``{'image', 'label', 'mask'}``, padding masked out.

  Every process yields the same number of batches (collectives need it); the shards' examples
  are contiguous, padded at the end. Variable-size images are centre-cropped.
  """
  data = config.data
  local_batch = local_batch_size(config.eval_batch_size, mesh)
  per_process = -(-len(source) // jax.process_count())
  start = jax.process_index() * per_process
  records = source.records if source.in_memory is None else source.in_memory
  dataset = grain.MapDataset.source(records)[start:min(start + per_process, len(source))]
  shape = source_shape(source, data)
  if None in source.example_shape:
    crop = functools.partial(images.center_crop, out=data.image_size,
                             crop_fraction=data.crop_fraction, channels=shape[-1])
    dataset = dataset.map(lambda e: {**e, 'image': crop(e['image'])})
  num_batches = -(-per_process // local_batch)

  def pad(batch: dict) -> dict:
    count = len(batch['label'])
    filler = local_batch - count
    image = np.asarray(batch['image'])
    return {
        'image': np.concatenate([image, np.zeros((filler, *shape), image.dtype)]),
        'label': np.concatenate([np.asarray(batch['label'], np.int32),
                                 np.zeros((filler, *source.label_shape), np.int32)]),
        'mask': np.concatenate([np.ones(count, np.float32), np.zeros(filler, np.float32)]),
    }

  host = dataset.batch(local_batch).map(pad)
  processes = workers(source, data) if None in source.example_shape else 0

  def batches() -> Iterator[dict]:
    produced = 0
    for batch in _device_batches(host, mesh, data, processes):
      produced += 1
      yield batch
    empty = pad({'image': np.zeros((0, *shape), np.uint8),
                 'label': np.zeros((0, *source.label_shape), np.int32)})
    for _ in range(num_batches - produced):
      yield _finish(_to_global(empty, mesh), tuple(data.mean), tuple(data.std), False)

  return batches()


def source_shape(source: Source, data: ml_collections.ConfigDict) -> tuple:
  """Shape of one preprocessed example (variable-size images are cropped to image_size)."""
  if None in source.example_shape:
    return (data.image_size, data.image_size, source.example_shape[-1])
  return source.example_shape
