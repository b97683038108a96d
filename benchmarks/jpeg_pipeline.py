"""ImageNet-class JPEG input: images per CPU-second and per wall second of the ImageNet training
preprocessing (random-resized / inception crop to 224, flip, normalise, batches of 32) over one
synthetic set of variable-size JPEGs made here, for

* cnn_jax's `pipeline.train_batches` (``image_folder`` data, the ``imagenet_resnet50`` recipe)
  with 0 (grain threads only), 1, 2, ... worker processes, up to the host's cores;
* a torchvision DataLoader (ImageFolder, RandomResizedCrop + flip + ToTensor + Normalize), with
  the same worker counts;
* tf.data with ``decode_and_crop_jpeg`` (the Flax ImageNet example's input), with that many
  threads, where TensorFlow is installed (the [prepare] extra).

Each configuration runs in a process of its own; its CPU time is that of its whole process tree
(workers included, start-up excluded: the clock starts after a few batches). Each configuration
runs once per round; its best round is kept.
"""

import os
import time

import psutil

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
SIZE = 224


def make_set(root: str, classes: int = 10, per_class: int = 120) -> str:
  """The synthetic JPEG folder (300-500 px sides, as ImageNet's typical photo); returns DIR."""
  from cnn_jax.data import image_folder  # pylint: disable=g-import-not-at-top
  if not os.path.isdir(os.path.join(root, 'train')):
    image_folder.write_synthetic(root, classes, per_class, sizes=(300, 500))
  return root


def _cpu_seconds() -> float:
  process = psutil.Process()
  times = [process.cpu_times()] + [c.cpu_times() for c in process.children(recursive=True)]
  return sum(t.user + t.system for t in times)


def _measure(batches, count: int, batch_size: int, warm: int) -> dict:
  for _ in range(warm):
    next(batches)
  cpu, wall = _cpu_seconds(), time.perf_counter()
  for _ in range(count):
    next(batches)
  cpu, wall = _cpu_seconds() - cpu, time.perf_counter() - wall
  images = count * batch_size
  return {'images_per_s': round(images / wall, 1), 'images_per_cpu_s': round(images / cpu, 1),
          'cpu_s': round(cpu, 2), 'wall_s': round(wall, 2)}


def cnn_jax_worker(root: str, data_dir: str, workers: int, count: int, batch_size: int) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  from cnn_jax.data import pipeline, sources  # pylint: disable=g-import-not-at-top
  from cnn_jax.train import parallel  # pylint: disable=g-import-not-at-top
  from experiments import imagenet_resnet50  # pylint: disable=g-import-not-at-top

  flags.FLAGS.mark_as_parsed()
  config = imagenet_resnet50.get_config()
  config.data.name, config.data.folder, config.data.data_dir = 'image_folder', root, data_dir
  config.data.workers, config.batch_size = workers, batch_size
  source = sources.for_config(config.data, 'train')
  stream = pipeline.train_batches(source, config, parallel.make_mesh(jax.devices()[:1]))
  blocking = (jax.block_until_ready(b) for b in stream)
  return {'framework': 'cnn_jax', 'workers': workers,
          **_measure(blocking, count, batch_size, warm=max(2, 2 * workers))}


def torchvision_worker(root: str, workers: int, count: int, batch_size: int) -> dict:
  import torch  # pylint: disable=g-import-not-at-top
  from benchmarks import torchvision_cpu  # pylint: disable=g-import-not-at-top
  torchvision = torchvision_cpu.load()
  t = torchvision.transforms
  dataset = torchvision.datasets.ImageFolder(os.path.join(root, 'train'), t.Compose([
      t.RandomResizedCrop(SIZE), t.RandomHorizontalFlip(), t.ToTensor(), t.Normalize(MEAN, STD)]))
  loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True,
                                       num_workers=workers, persistent_workers=workers > 0,
                                       drop_last=True)

  def endless():
    while True:
      yield from loader

  return {'framework': 'torchvision', 'workers': workers,
          **_measure(endless(), count, batch_size, warm=max(2, 2 * workers))}


def tf_data_worker(root: str, threads: int, count: int, batch_size: int) -> dict:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  files = sorted(os.path.join(d, f) for d, _, names in os.walk(os.path.join(root, 'train'))
                 for f in names)

  def preprocess(path):
    data = tf.io.read_file(path)
    shape = tf.io.extract_jpeg_shape(data)
    begin, size, _ = tf.image.sample_distorted_bounding_box(
        shape, tf.zeros([0, 0, 4]), area_range=(0.08, 1.0), aspect_ratio_range=(3 / 4, 4 / 3),
        max_attempts=10, use_image_if_no_bounding_boxes=True)
    offset_y, offset_x, _ = tf.unstack(begin)
    height, width, _ = tf.unstack(size)
    image = tf.image.decode_and_crop_jpeg(data, tf.stack([offset_y, offset_x, height, width]),
                                          channels=3)
    image = tf.image.random_flip_left_right(tf.image.resize(image, (SIZE, SIZE)))
    return (image / 255.0 - MEAN) / STD

  options = tf.data.Options()
  options.threading.private_threadpool_size = threads
  dataset = (tf.data.Dataset.from_tensor_slices(files).repeat().shuffle(len(files))
             .map(preprocess, num_parallel_calls=threads).batch(batch_size).prefetch(2)
             .with_options(options))
  return {'framework': 'tf.data', 'workers': threads,
          **_measure(iter(dataset.as_numpy_iterator()), count, batch_size, warm=3)}


def benchmark(spawn, root: str, data_dir: str, count: int, rounds: int,
              batch_size: int = 32) -> dict:
  """Every configuration, each in a process of its own (``spawn(worker args) -> dict``), all of
  them once per round in turn; a configuration's figure is its best round (this VM's neighbours
  come and go)."""
  cores = os.cpu_count() or 1
  configurations = [['jpeg_cnn_jax', root, data_dir, str(w)] for w in range(cores + 1)]
  configurations += [['jpeg_torchvision', root, str(w)] for w in range(cores + 1)]
  try:
    import tensorflow  # pylint: disable=g-import-not-at-top,unused-import
    configurations += [['jpeg_tf_data', root, str(w)] for w in range(1, cores + 1)]
    tf_note = None
  except ImportError:
    tf_note = 'tf.data not measured: TensorFlow is not installed (the [prepare] extra has it)'
  best = {}
  for _ in range(rounds):
    for args in configurations:
      run = spawn([*args, str(count), str(batch_size)])
      key = (run['framework'], run['workers'])
      if key not in best or run['images_per_s'] > best[key]['images_per_s']:
        best[key] = run
  runs = list(best.values())
  top = lambda name, key: max((r[key] for r in runs if r['framework'] == name), default=None)
  ours = top('cnn_jax', 'images_per_cpu_s')
  one = best[('cnn_jax', 1)]['images_per_s']
  return {
      'images': sum(len(files) for _, _, files in os.walk(os.path.join(root, 'train'))),
      'batch_size': batch_size, 'cores': cores, 'rounds': rounds, 'runs': runs,
      'cpu_efficiency_over_torchvision': round(ours / top('torchvision', 'images_per_cpu_s'), 2),
      'cpu_efficiency_over_tf_data': (round(ours / top('tf.data', 'images_per_cpu_s'), 2)
                                      if top('tf.data', 'images_per_cpu_s') else tf_note),
      'workers_scaling': {r['workers']: round(r['images_per_s'] / one, 2) for r in runs
                          if r['framework'] == 'cnn_jax' and r['workers'] >= 1},
  }
