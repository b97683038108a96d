"""The user's own images: ``DIR/train/CLASS/*`` (and ``DIR/val/CLASS/*``, ``DIR/test/CLASS/*``
where they exist) prepared once into array_record files, without TensorFlow.

The files' bytes are stored as they are, in the catalogue's image feature (a JPEG keeps its DCT
scaling for the pipeline's decoder);
every file is checked by decoding it at 1/8 scale, and unreadable or empty ones are skipped and
counted in one warning. Without a ``val`` folder, a seeded ``holdout_fraction`` of each class of
``train`` becomes the ``validation`` split. A change to the folder (files added, removed or
modified) prepares it again under another name.
"""

import hashlib
import os
import re

import cv2
import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from PIL import Image

from cnn_jax.data.registry import register_dataset
from cnn_jax.errors import ConfigError

EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.webp', '.tif', '.tiff')
# Split folders, by the TFDS split each becomes.
SPLIT_FOLDERS = {'train': ('train',), 'validation': ('val', 'validation', 'valid'),
                 'test': ('test',)}
_GRAY_MODES = ('1', 'L', 'LA', 'I', 'I;16', 'F')
_SEED = 0


def _files(directory: str) -> dict[str, list[str]]:
  """``{class: sorted image paths}`` for the class subfolders of ``directory``."""
  classes = {}
  for entry in sorted(os.scandir(directory), key=lambda e: e.name):
    if entry.is_dir() and not entry.name.startswith('.'):
      paths = sorted(os.path.join(root, name) for root, _, names in os.walk(entry.path)
                     for name in names if name.lower().endswith(EXTENSIONS))
      if paths:
        classes[entry.name] = paths
  return classes


def _layout(folder: str) -> dict[str, str]:
  """``{split: directory}`` of ``folder``; a folder of class subfolders alone is all train."""
  if not os.path.isdir(folder):
    raise ConfigError(f'config.data.folder={folder!r} is not a directory; expected DIR/train/CLASS/'
                      '*.jpg (and optionally DIR/val/CLASS/*).')
  splits = {}
  for split, names in SPLIT_FOLDERS.items():
    for name in names:
      if os.path.isdir(os.path.join(folder, name)):
        splits[split] = os.path.join(folder, name)
        break
  if 'train' not in splits:
    splits = {'train': folder}
  if not _files(splits['train']):
    raise ConfigError(f'{splits["train"]} has no class subfolders with images ({", ".join(EXTENSIONS)}); '
                      'expected DIR/train/CLASS/*.jpg, one subfolder per class.')
  return splits


def _fingerprint(splits: dict[str, str], holdout: float) -> str:
  """Changes whenever a file is added, removed, renamed or modified."""
  digest = hashlib.sha1(repr(holdout).encode())
  for split, directory in sorted(splits.items()):
    for label, paths in _files(directory).items():
      for path in paths:
        stat = os.stat(path)
        digest.update(f'{split}/{label}/{os.path.basename(path)}:{stat.st_size}:{stat.st_mtime_ns}'
                      .encode())
  return digest.hexdigest()[:10]


def _readable(path: str) -> tuple[bytes, bool] | None:
  """The file's bytes and whether it is colour; None when it is empty or does not decode."""
  with open(path, 'rb') as f:
    data = f.read()
  if not data or cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_REDUCED_GRAYSCALE_8) is None:
    return None
  try:
    mode = Image.open(path).mode
  except Exception:  # pylint: disable=broad-except
    return None
  return data, mode not in _GRAY_MODES


@register_dataset('image_folder', options=('folder', 'holdout_fraction'))
class ImageFolder(tfds.core.GeneratorBasedBuilder):
  """Images in class subfolders; one builder config per folder and content."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Encoded files as stored, channels in metadata.'}

  def __init__(self, *, folder: str, holdout_fraction: float = 0.1, config=None, **kwargs):
    del config  # made from the folder (an unpickled builder passes its own back)
    if not folder:
      raise ConfigError('config.data.name=image_folder needs the images: add '
                        '--config.data.folder=DIR (DIR/train/CLASS/*.jpg).')
    self.folder = os.path.abspath(os.path.expanduser(folder))
    self.splits = _layout(self.folder)
    self.classes = list(_files(self.splits['train']))
    self.holdout = holdout_fraction if 'validation' not in self.splits else 0.0
    slug = re.sub(r'[^a-z0-9]+', '_', os.path.basename(self.folder).lower()).strip('_') or 'images'
    name = f'{slug}_{_fingerprint(self.splits, self.holdout)}'
    super().__init__(config=name, **kwargs)
    # Worker processes get the builder by pickle, which TFDS makes from these arguments.
    self._original_state.update(folder=folder, holdout_fraction=holdout_fraction, **kwargs)

  @classmethod
  def get_builder_config(cls, name: str, version=None) -> tfds.core.BuilderConfig:
    """Every folder's config is known: TFDS would otherwise warn of a custom one at each load."""
    del version
    return tfds.core.BuilderConfig(name=name)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=f'Images from {self.folder}, one class per subfolder.',
        features=tfds.features.FeaturesDict({
            # The file's bytes as they are (TFDS encodes nothing: no TensorFlow needed), stored
            # as the catalogue's ImageNet is; the channels it decodes to are in the metadata.
            'image': tfds.features.Image(shape=(None, None, 3)),
            'label': tfds.features.ClassLabel(names=self.classes),
        }),
        metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    files = {split: _files(directory) for split, directory in self.splits.items()}
    for split, by_class in files.items():
      unknown = sorted(set(by_class) - set(self.classes))
      if unknown:
        raise ConfigError(f'{self.splits[split]} has classes {unknown} that {self.splits["train"]} '
                          'lacks; every class needs training images.')
    examples = {split: [(path, self.classes.index(label)) for label, paths in by_class.items()
                        for path in paths] for split, by_class in files.items()}
    if self.holdout:
      rng = np.random.default_rng(_SEED)
      held = {path for paths in files['train'].values()
              for path in rng.permutation(paths)[:int(round(len(paths) * self.holdout))]}
      examples['validation'] = [e for e in examples['train'] if e[0] in held]
      examples['train'] = [e for e in examples['train'] if e[0] not in held]
    read, skipped = {}, []
    for split, pairs in examples.items():
      read[split] = []
      for path, label in pairs:
        content = _readable(path)
        if content is None:
          skipped.append(path)
        else:
          read[split].append((path, label, *content))
    if skipped:
      logging.warning('Skipped %d unreadable or empty image file(s) in %s, e.g. %s.', len(skipped),
                      self.folder, ', '.join(skipped[:3]))
    colour = any(c for pairs in read.values() for *_, c in pairs)
    self.info.metadata['channels'] = 3 if colour else 1
    self.info.metadata['skipped'] = len(skipped)
    return {split: self._generate_examples(pairs) for split, pairs in read.items() if pairs}

  def _generate_examples(self, pairs):
    for path, label, data, _ in pairs:
      yield os.path.relpath(path, self.folder), {'image': data, 'label': label}


def write_synthetic(directory: str, classes: int, per_class: int, sizes: tuple[int, int] = (300, 500),
                    seed: int = 0) -> list[str]:
  """Writes ``DIR/train/c<k>/<i>.jpg``: smooth random photos, each class its own colour cast,
  width and height uniform in ``sizes`` (ImageNet's typical range by default), JPEG quality 90.
  For benchmarks and tests of the pipeline where no real photos can be downloaded. Returns the
  paths."""
  rng = np.random.default_rng(seed)
  paths = []
  for label in range(classes):
    folder = os.path.join(directory, 'train', f'c{label}')
    os.makedirs(folder, exist_ok=True)
    cast = rng.uniform(0.3, 1.0, 3)
    for index in range(per_class):
      height, width = rng.integers(sizes[0], sizes[1] + 1, 2)
      coarse = rng.random((height // 16 + 2, width // 16 + 2, 3)) * cast
      image = Image.fromarray((coarse * 255).astype(np.uint8)).resize((width, height),
                                                                       Image.BILINEAR)
      noisy = np.asarray(image, np.float32) + rng.normal(0, 8, (height, width, 3))
      path = os.path.join(folder, f'{index}.jpg')
      Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(path, quality=90)
      paths.append(path)
  return paths
