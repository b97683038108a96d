"""The training stream: a small split served from memory gives exactly the batches of the
record-by-record reader, and a stream started at step t continues the uninterrupted one."""

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
