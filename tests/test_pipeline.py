"""The training stream: a small split served from memory gives exactly the batches of the
record-by-record reader, a stream started at step t continues the uninterrupted one, and
augmentation is applied exactly when the config sets one."""

import numpy as np

from cnn_jax.data import pipeline, sources
from cnn_jax.train import parallel
from experiments import default


def _batches(stream, count):
  return [{k: np.asarray(v) for k, v in next(stream).items()} for _ in range(count)]


def test_memory_and_records_give_the_same_stream_and_resume_exactly(data_dir, monkeypatch):
  config = default.get_config()
  config.data.data_dir = data_dir
  source = sources.load('digits', 'train', data_dir)
  mesh = parallel.make_mesh()
  assert source.in_memory is not None
  per_epoch = pipeline.steps_per_epoch(source, config.batch_size, mesh)
  from_memory = _batches(pipeline.train_batches(source, config, mesh), per_epoch + 3)
  resumed = _batches(pipeline.train_batches(source, config, mesh, per_epoch - 1), 4)
  monkeypatch.setattr(sources, 'IN_MEMORY_BYTES', 0)
  fresh = sources.load('digits', 'train', data_dir)  # not decoded: too big for the limit now
  assert fresh.in_memory is None
  from_records = _batches(pipeline.train_batches(fresh, config, mesh), per_epoch + 3)
  for a, b in zip(from_memory, from_records):
    np.testing.assert_array_equal(a['image'], b['image'])
    np.testing.assert_array_equal(a['label'], b['label'])
  for a, b in zip(from_memory[per_epoch - 1:], resumed):  # across the epoch boundary
    np.testing.assert_array_equal(a['image'], b['image'])
  # A new epoch draws a new order.
  assert not np.array_equal(from_memory[0]['label'], from_memory[per_epoch]['label'])


def test_a_stream_is_augmented_exactly_when_an_augmentation_is_set(data_dir):
  config = default.get_config()
  config.data.data_dir = data_dir
  config.data.augment.ops = ()
  source = sources.load('digits', 'train', data_dir)
  mesh = parallel.make_mesh()
  plain = _batches(pipeline.train_batches(source, config, mesh), 2)
  positions = pipeline._Positions(len(source), config.batch_size, config.seed)  # pylint: disable=protected-access
  for step, batch in enumerate(plain):  # the examples themselves, normalised, nothing else
    examples = source.in_memory[positions[step]]
    np.testing.assert_array_equal(batch['label'], examples['label'])
    np.testing.assert_allclose(batch['image'], pipeline.normalize(examples['image'], config.data), rtol=1e-6)
  config.data.augment.ops = ('flip',)
  flipped = _batches(pipeline.train_batches(source, config, mesh), 2)
  for a, b in zip(plain, flipped):
    np.testing.assert_array_equal(a['label'], b['label'])
    same = [np.array_equal(x, y) for x, y in zip(a['image'], b['image'])]
    mirrored = [np.array_equal(x[:, ::-1], y) for x, y in zip(a['image'], b['image'])]
    assert all(s or m for s, m in zip(same, mirrored)) and 0 < sum(mirrored) < len(mirrored)


def test_batches_moved_in_groups_are_the_batches_moved_one_by_one(data_dir):
  config = default.get_config()
  config.data.data_dir = data_dir
  config.data.augment.ops = ('flip',)  # drawn per batch: the same whatever the grouping
  source = sources.load('digits', 'train', data_dir)
  mesh = parallel.make_mesh()
  stream = pipeline.train_batches(source, config, mesh)
  one_by_one = [next(stream) for _ in range(7)]
  config.data.batches_per_transfer = 3
  stream = pipeline.train_batches(source, config, mesh)
  in_groups = [next(stream) for _ in range(7)]
  resumed = _batches(pipeline.train_batches(source, config, mesh, 4), 3)  # inside a group
  sharding = one_by_one[0]['image'].sharding
  assert all(b[k].sharding == sharding for b in in_groups for k in b)
  for a, b in zip(one_by_one, in_groups):
    np.testing.assert_array_equal(a['image'], b['image'])
    np.testing.assert_array_equal(a['label'], b['label'])
  for a, b in zip(one_by_one[4:], resumed):
    np.testing.assert_array_equal(a['image'], b['image'])
    np.testing.assert_array_equal(a['label'], b['label'])
