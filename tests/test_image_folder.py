"""Your own images: a folder of class subfolders prepared once (no TensorFlow), unreadable files
skipped and counted, a seeded validation split, the stream the same with worker processes as
without (and resumed exactly), and a real launch from the command line."""

import json
import logging
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from cnn_jax.data import image_folder, pipeline, sources
from cnn_jax.errors import ConfigError
from cnn_jax.train import parallel
from experiments import image_folder as folder_experiment

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
  root = str(tmp_path_factory.mktemp('photos'))
  image_folder.write_synthetic(root, classes=3, per_class=10, sizes=(40, 90))
  gray = np.random.default_rng(0).integers(0, 255, (50, 60), np.uint8)
  Image.fromarray(gray).save(os.path.join(root, 'train', 'c1', 'gray.png'))
  open(os.path.join(root, 'train', 'c0', 'empty.jpg'), 'wb').close()
  with open(os.path.join(root, 'train', 'c2', 'broken.jpg'), 'wb') as f:
    f.write(b'\xff\xd8 not really a jpeg')
  return root


def test_a_folder_is_prepared_once_with_a_seeded_validation_split(folder, tmp_path, caplog,
                                                                  monkeypatch):
  data_dir = str(tmp_path / 'tfds')
  with caplog.at_level(logging.WARNING):
    train = sources.load('image_folder', 'train', data_dir, folder)
  assert 'Skipped 2 unreadable or empty image file(s)' in caplog.text
  validation = sources.load('image_folder', 'validation', data_dir, folder)
  assert train.num_classes == 3 and train.example_shape == (None, None, 3)
  assert len(train) + len(validation) == 31  # 30 photos + the gray PNG; 2 bad files skipped
  labels = sorted(int(validation.records[i]['label']) for i in range(len(validation)))
  assert labels == [0, 1, 2]  # a seeded 10% of each class
  again = lambda: sources.load('image_folder', 'validation', data_dir, folder)
  monkeypatch.setattr(image_folder.ImageFolder, 'download_and_prepare',
                      lambda *a, **k: pytest.fail('prepared twice'))
  assert [r['label'] for r in again().records] == [r['label'] for r in validation.records]
  monkeypatch.undo()
  # A changed folder is a new dataset, prepared again.
  extra = os.path.join(folder, 'train', 'c0', 'extra.jpg')
  shutil.copy(os.path.join(folder, 'train', 'c0', '0.jpg'), extra)
  try:
    assert len(sources.load('image_folder', 'train', data_dir, folder)) + len(again()) == 32
  finally:
    os.remove(extra)


def test_grayscale_folders_val_folders_and_layout_mistakes(tmp_path):
  gray = tmp_path / 'gray'
  for split, count in (('train', 4), ('val', 2)):
    for label in ('a', 'b'):
      os.makedirs(gray / split / label)
      for i in range(count):
        Image.fromarray(np.full((20, 30), 40 * i, np.uint8)).save(gray / split / label / f'{i}.png')
  data_dir = str(tmp_path / 'tfds')
  validation = sources.load('image_folder', 'validation', data_dir, str(gray))
  assert validation.example_shape == (None, None, 1) and len(validation) == 4  # val/ as it is
  assert len(sources.load('image_folder', 'train', data_dir, str(gray))) == 8
  os.makedirs(gray / 'val' / 'zebra')
  shutil.copy(gray / 'val' / 'a' / '0.png', gray / 'val' / 'zebra' / '0.png')
  with pytest.raises(ConfigError, match=r"classes \['zebra'\] that .* lacks"):
    sources.load('image_folder', 'train', data_dir, str(gray))
  os.makedirs(tmp_path / 'empty' / 'train' / 'nothing')
  with pytest.raises(ConfigError, match='has no class subfolders with images'):
    sources.load('image_folder', 'train', data_dir, str(tmp_path / 'empty'))
  with pytest.raises(ConfigError, match='needs the images: add --config.data.folder=DIR'):
    sources.load('image_folder', 'train', data_dir, '')


def _config(folder, data_dir, workers):
  config = folder_experiment.get_config()
  config.data.folder, config.data.data_dir, config.data.workers = folder, data_dir, workers
  config.data.image_size, config.batch_size, config.eval_batch_size = 24, 8, 8
  config.data.augment.ops = ('inception_crop', 'randaugment', 'color_jitter', 'flip',
                             'random_erasing')
  return config


@pytest.mark.slow
def test_worker_processes_give_the_same_stream_and_resume_exactly(folder, tmp_path):
  mesh = parallel.make_mesh()
  data_dir = str(tmp_path / 'tfds')
  source = sources.load('image_folder', 'train', data_dir, folder)
  grab = lambda stream, n: [{k: np.asarray(v) for k, v in next(stream).items()} for _ in range(n)]
  alone = grab(pipeline.train_batches(source, _config(folder, data_dir, 0), mesh), 5)
  with_workers = grab(pipeline.train_batches(source, _config(folder, data_dir, 2), mesh), 5)
  resumed = grab(pipeline.train_batches(source, _config(folder, data_dir, 2), mesh, 3), 2)
  for a, b in zip(alone, with_workers):
    np.testing.assert_array_equal(a['image'], b['image'])
    np.testing.assert_array_equal(a['label'], b['label'])
  for a, b in zip(alone[3:], resumed):
    np.testing.assert_array_equal(a['image'], b['image'])
  assert alone[0]['image'].shape == (8, 24, 24, 3) and alone[0]['image'].dtype == np.float32
  assert not np.array_equal(alone[0]['image'], alone[1]['image'])
  validation = sources.load('image_folder', 'validation', data_dir, folder)
  batches = list(pipeline.eval_batches(validation, _config(folder, data_dir, 2), mesh))
  assert sum(float(np.asarray(b['mask']).sum()) for b in batches) == len(validation)


@pytest.mark.slow
def test_training_on_a_folder_from_the_command_line(folder, tmp_path):
  workdir, data_dir = str(tmp_path / 'run'), str(tmp_path / 'tfds')
  result = subprocess.run(
      [sys.executable, '-m', 'cnn_jax.main', '--config=experiments/image_folder.py',
       f'--config.data.folder={folder}', f'--config.data.data_dir={data_dir}',
       f'--workdir={workdir}', '--config.num_steps=4', '--config.batch_size=8',
       '--config.eval_batch_size=8', '--config.data.image_size=32',
       '--config.model.kwargs.width=8', '--config.data.workers=2', '--config.grad_accum_steps=2',
       "--config.data.augment.ops=('inception_crop','autoaugment','flip','cutmix','mixup')",
       '--config.log_every=2', '--config.eval_every=4', '--config.checkpoint.every=4'],
      cwd=REPO, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  with open(os.path.join(workdir, 'final_metrics.json'), encoding='utf-8') as f:
    metrics = json.load(f)
  # Every validation photo once (the folder's held-out share); it has no test/ folder.
  assert metrics['splits'] == {'train': 'train', 'val': 'validation', 'test': ''}
  assert metrics['last']['val']['count'] == 3 and np.isfinite(metrics['last']['val']['loss'])
  assert 'test' not in metrics['last']
