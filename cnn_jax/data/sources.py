"""Random-access TFDS sources by name, read from array_record files without TensorFlow."""

import contextlib
import dataclasses
import fcntl
import functools
import io
import os
import re

import jax
import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from jax.experimental import multihost_utils

from cnn_jax import console
from cnn_jax.data import registry
from cnn_jax.errors import ConfigError

DEFAULT_DATA_DIR = os.path.join('~', 'tensorflow_datasets')
# Variable-size images are read as their files' bytes: the pipeline decodes only what it crops.
# (tfds.testing.mock_data cannot make such bytes without TensorFlow: tests under it turn it off.)
READ_ENCODED_IMAGES = True


# A split up to this size is decoded once and served from memory: decoding a record costs far
# more than a small image's share of a train step.
IN_MEMORY_BYTES = 512 * 2**20


class Columns:
  """A decoded split as arrays, indexed like the records they came from: by one index, or by an
  array of them for a whole batch."""

  def __init__(self, columns: dict[str, np.ndarray]):
    self.columns = columns

  def __len__(self) -> int:
    return len(self.columns['label'])

  def __getitem__(self, index: int | np.ndarray) -> dict:
    return {name: column[index] for name, column in self.columns.items()}


@dataclasses.dataclass(frozen=True)
class Source:
  """A dataset split as a random-access sequence of ``{'image', 'label'}`` examples.

  ``label_shape`` is () for a class per example and the spatial shape of the image for a class per
  pixel (segmentation).
  """
  records: object
  num_classes: int
  example_shape: tuple  # may hold None for variable-size images (e.g. ImageNet)
  name: str
  split: str
  label_shape: tuple = ()

  def __len__(self) -> int:
    return len(self.records)

  @functools.cached_property
  def in_memory(self) -> Columns | None:
    """The split decoded into arrays on first use, if its examples have a fixed shape and it fits
    in `IN_MEMORY_BYTES`; None otherwise. Kept with the source: a run evaluates a split often."""
    if None in self.example_shape or len(self) * (
        np.prod(self.example_shape) + 4 * np.prod(self.label_shape)) > IN_MEMORY_BYTES:
      return None
    examples = [self.records[i] for i in range(len(self))]
    return Columns({name: np.stack([np.asarray(e[name]) for e in examples])
                    for name in ('image', 'label')})


def prepare_command(name: str, data_dir: str) -> str:
  """The commands that prepare a catalogue dataset, runnable as printed from where the user is."""
  return (f"{console.tool('pip')} install -e '{console.checkout()}[prepare]' && "
          f"{console.tool('tfds')} build {name} --data_dir={data_dir} --file_format=array_record")


def _prepare_once(make, lock_path: str) -> None:
  """Prepares a dataset under a file lock: another job preparing it at the same time waits, then
  finds it prepared (TFDS itself would fail renaming its half-written folder)."""
  os.makedirs(os.path.dirname(lock_path), exist_ok=True)
  with open(lock_path, 'w', encoding='utf-8') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
      builder = make()
      if not builder.is_prepared():
        logging.info('Preparing %s in %s (once; later launches read it) ...', builder.name,
                     builder.data_dir)
        # One line says it; TFDS's progress bars and prints would fill a log.
        tfds.display_progress_bar(False)
        try:
          with contextlib.redirect_stdout(io.StringIO()):
            builder.download_and_prepare()
        finally:
          tfds.display_progress_bar(True)
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)


def _builder(name: str, data_dir: str, folder: str | None, holdout_fraction: float):
  """``name``'s TFDS builder over ``data_dir``; a registered dataset is prepared first (once)."""
  make = registry.maker(name)
  if make is None:
    try:
      return tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as error:
      raise ConfigError(f'Unknown dataset {name!r}: not one of ours {registry.names()} (register '
                        'yours: docs/extending.md) nor in the TFDS catalogue.') from error
  make = functools.partial(make, data_dir, folder=folder, holdout_fraction=holdout_fraction)
  # One process prepares; the others wait (several writers would race on the same directory),
  # then open the prepared files (a builder made before they existed would see no splits).
  if jax.process_index() == 0 and not make().is_prepared():
    _prepare_once(make, os.path.join(data_dir, f'.{name}.lock'))
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(f'prepared {name} in {data_dir}')
  return make()


def _not_prepared(name: str, data_dir: str) -> FileNotFoundError:
  return FileNotFoundError(
      f'Dataset {name!r} is not prepared as array_record in {data_dir}. Prepare it once (needs '
      f'TensorFlow, from the [prepare] extra): {prepare_command(name, data_dir)} - or point '
      'config.data.data_dir at a directory where it is prepared.')


def _check_split(builder, name: str, split: str) -> None:
  """A split spec naming a split the prepared dataset lacks is a config mistake, not a missing
  preparation: say which splits there are."""
  sizes = {k: v.num_examples for k, v in builder.info.splits.items()}  # {} when unprepared
  missing = [s for s in re.findall(r'(?:^|\+)\s*([\w-]+)', split) if s not in sizes]
  if sizes and missing:
    listed = ', '.join(f'{k} ({v:,} examples)' for k, v in sorted(sizes.items()))
    raise ConfigError(f'Dataset {name!r} has no split {missing[0]!r}; its splits are {listed}. '
                      'Name one of them (or a slice, e.g. train[:90%]) in config.data.train_split '
                      '/ val_split / test_split.')


def load(name: str, split: str, data_dir: str | None = None, folder: str | None = None,
         holdout_fraction: float = 0.1) -> Source:
  """Opens ``name``'s ``split`` (a TFDS split spec, e.g. 'train[:90%]') from ``data_dir``;
  ``image_folder`` reads (and prepares once) ``folder``.

  Raises:
    FileNotFoundError: a catalogue dataset that is not prepared as array_record in ``data_dir``;
      the message holds the command that prepares it.
    ConfigError: an unknown dataset, or a split it does not have (the message lists its splits).
  """
  data_dir = os.path.expanduser(data_dir or DEFAULT_DATA_DIR)
  return _source(_builder(name, data_dir, folder, holdout_fraction), name, split, data_dir)


def _source(builder, name: str, split: str, data_dir: str) -> Source:
  """``split`` of the dataset ``builder`` opens (`load`)."""
  _check_split(builder, name, split)
  features = builder.info.features
  image_shape = tuple(features['image'].shape)
  decoders = ({'image': tfds.decode.SkipDecoding()}
              if READ_ENCODED_IMAGES and None in image_shape else None)
  try:
    records = builder.as_data_source(split=split, decoders=decoders)
  except Exception as error:  # pylint: disable=broad-except
    # Prepared as TFRecord (which has no random access): the same fix as unprepared.
    raise _not_prepared(name, data_dir) from error
  if name == 'image_folder':
    image_shape = (None, None, builder.info.metadata['channels'])
  label = features['label']
  # Per-pixel labels are Tensor features; our builders name the class count.
  num_classes = getattr(label, 'num_classes', None) or getattr(builder, 'NUM_CLASSES', None)
  if num_classes is None:
    raise ValueError(f"Dataset {name!r}: its 'label' feature ({type(label).__name__}) has no class "
                     'count; the loop reads class labels (ClassLabel) or per-pixel labels from '
                     'a builder that sets NUM_CLASSES, as cnn_jax/data/shapes.py does.')
  return Source(records, num_classes, image_shape, name, split, tuple(label.shape))


def for_config(data, split: str) -> Source:
  """``split`` of the dataset ``config.data`` names (a run's saved config may predate the
  image-folder fields)."""
  return load(data.name, split, data.data_dir, data.get('folder'), data.get('holdout_fraction', 0.1))


def _config_builder(data):
  return _builder(data.name, _data_dir(data), data.get('folder'),
                  data.get('holdout_fraction', 0.1))


def _data_dir(data) -> str:
  return os.path.expanduser(data.data_dir or DEFAULT_DATA_DIR)


AUTO = 'auto'
ROLES = ('train', 'val', 'test')


def run_splits(data, builder=None) -> dict[str, str]:
  """The split specs a run trains on, validates on (each evaluation during training, and the
  choice of the best checkpoint) and tests on once at the end (``''``: no test split).

  ``config.data.val_split='auto'`` takes the dataset's own ``validation`` split, or else holds out
  the last ``holdout_fraction`` of train (TFDS shuffles records when it prepares a dataset, so
  the slice is a random subset, the same at every launch) and trains on the rest;
  ``test_split='auto'`` takes ``test`` where the dataset has one. A run saved before the
  validation split existed evaluated ``eval_split``: that is its val split, and it has no test.
  ``builder``: the dataset's, where the caller has it open.
  """
  if 'val_split' not in data:
    return {'train': data.train_split, 'val': data.eval_split, 'test': ''}
  # Unprepared, a dataset names no splits: loading it fails next, saying how to prepare it.
  names = set((builder or _config_builder(data)).info.splits)
  train, val, test = data.train_split, data.val_split, data.test_split
  if val == AUTO and 'validation' in names:
    val = 'validation'
  elif val == AUTO:
    if not re.fullmatch(r'[\w-]+', train):
      raise ConfigError(f"config.data.val_split='auto' holds out the end of a whole split, but "
                        f'config.data.train_split={train!r} is a slice: name the validation '
                        "split too (e.g. --config.data.val_split='train[90%:]').")
    if not 0 < data.holdout_fraction < 1:
      raise ConfigError(f'config.data.holdout_fraction={data.holdout_fraction!r}: {data.name} has '
                        'no validation split, so a share of train in (0, 1) validates.')
    kept = f'{100 * (1 - data.holdout_fraction):g}%'
    train, val = f'{train}[:{kept}]', f'{train}[{kept}:]'
  if test == AUTO:
    test = 'test' if 'test' in names else ''
  return {'train': train, 'val': val, 'test': test}


def run_sources(data) -> tuple[dict[str, str], dict[str, Source | None]]:
  """A run's split specs (`run_splits`) and each one's `Source` (None for no test split), all
  from one opening of the dataset (a registered one's preparation checked, and its hosts synced,
  once)."""
  builder = _config_builder(data)
  specs = run_splits(data, builder)
  return specs, {role: _source(builder, data.name, spec, _data_dir(data)) if spec else None
                 for role, spec in specs.items()}
