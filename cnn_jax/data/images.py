"""Variable-size images: decoding (only as much of a JPEG as a crop needs), the training crop of
the ImageNet recipes and the evaluation centre crop, each one example at a time.

An image arrives either encoded (the file's bytes, as `bytes` or a 1-D uint8 array) or decoded
([H, W, C] uint8). OpenCV decodes (JPEG, PNG and the other formats it reads) and resizes: it was
the fastest decoder and resizer measured (docs/performance.md). A JPEG is decoded at 1/2, 1/4 or
1/8 scale straight from its DCT coefficients when the crop still has the output's resolution
there, so a large photo costs little more than a small one.
"""

import io
import math

import cv2
import numpy as np
from PIL import Image

# JPEG's DCT scaling: the decoder can output 1/1, 1/2, 1/4 or 1/8 of the full size.
_REDUCTIONS = {1: 0, 2: cv2.IMREAD_REDUCED_GRAYSCALE_2, 4: cv2.IMREAD_REDUCED_GRAYSCALE_4,
               8: cv2.IMREAD_REDUCED_GRAYSCALE_8}
# Bilinear interpolation reads 2 x 2 neighbours: up to this shrink factor every input pixel
# counts. A JPEG's DCT scaling takes care of the factors beyond (`_reduction`), so bilinear is
# what most crops need; area averaging, several times dearer, is kept for larger shrinks.
BILINEAR_MOST = 2.0
# One thread per decode: the pipeline's parallelism is its worker processes.
cv2.setNumThreads(1)


class UnreadableImage(ValueError):
  """The bytes are not an image OpenCV can decode."""


def encoded(image) -> bool:
  """Whether ``image`` is a file's bytes rather than a decoded [H, W, C] array."""
  return isinstance(image, bytes) or np.asarray(image).ndim == 1


def size(image) -> tuple[int, int]:
  """``(height, width)`` of an encoded or decoded image; an encoded one's header alone is read."""
  if not encoded(image):
    return tuple(np.shape(image)[:2])
  data = image if isinstance(image, bytes) else np.asarray(image).tobytes()
  try:
    width, height = Image.open(io.BytesIO(data)).size
  except Exception as error:  # pylint: disable=broad-except
    raise UnreadableImage(f'not an image file ({error})') from error
  return height, width


def decode(image, channels: int, reduction: int = 1) -> np.ndarray:
  """[H, W, channels] uint8 of an encoded image, at 1/``reduction`` of its size (1, 2, 4 or 8);
  a decoded one is passed through (its channels converted)."""
  if not encoded(image):
    array = np.asarray(image)
    if array.shape[-1] == channels:
      return array
    return array[..., :1] if channels == 1 else np.repeat(array, 3, axis=-1)
  flags = _REDUCTIONS[reduction] | (cv2.IMREAD_GRAYSCALE if channels == 1 else cv2.IMREAD_COLOR_RGB)
  data = np.frombuffer(image, np.uint8) if isinstance(image, bytes) else np.asarray(image)
  array = cv2.imdecode(data, flags)
  if array is None:
    raise UnreadableImage('OpenCV could not decode the image bytes')
  return array.reshape(*array.shape[:2], channels)


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
  """[height, width, C]: bilinear, or area averaging when shrinking by more than
  `BILINEAR_MOST` (bilinear then skips pixels: aliasing)."""
  channels = image.shape[-1]
  shrink = max(image.shape[0] / height, image.shape[1] / width)
  out = cv2.resize(image, (width, height),
                   interpolation=cv2.INTER_AREA if shrink > BILINEAR_MOST else cv2.INTER_LINEAR)
  return out.reshape(height, width, channels)


def _reduction(image, side: int, out: int) -> int:
  """The largest DCT scale-down (1, 2, 4 or 8) of an encoded image that leaves ``side`` pixels at
  least ``out``; 1 for a decoded one."""
  reduction = 1
  if encoded(image):
    while reduction < 8 and side >= 2 * reduction * out:
      reduction *= 2
  return reduction


def crop_and_resize(image, box: tuple[int, int, int, int], out: int, channels: int) -> np.ndarray:
  """The ``box`` = (top, left, height, width) of the full-size image, resized to [out, out, C];
  a JPEG is decoded at the smallest DCT scale that still covers ``out`` pixels across the box."""
  top, left, height, width = box
  reduction = _reduction(image, min(height, width), out)
  array = decode(image, channels, reduction)
  if reduction > 1:  # the box in the reduced image's pixels
    top, left = top // reduction, left // reduction
    height = max(1, min(height // reduction, array.shape[0] - top))
    width = max(1, min(width // reduction, array.shape[1] - left))
  return resize(array[top:top + height, left:left + width], out, out)


def inception_box(rng: np.random.Generator, height: int, width: int,
                  area_range: tuple[float, float], aspect_range: tuple[float, float],
                  attempts: int = 10) -> tuple[int, int, int, int]:
  """The Inception / RandomResizedCrop box: a random fraction of the area in ``area_range`` with
  a log-uniform aspect ratio (width / height) in ``aspect_range``, placed uniformly; after
  ``attempts`` draws that do not fit, the largest centred box whose aspect is in range."""
  area = height * width
  log_aspect = np.log(aspect_range)
  for _ in range(attempts):
    target = area * rng.uniform(*area_range)
    aspect = math.exp(rng.uniform(*log_aspect))
    w = int(round(math.sqrt(target * aspect)))
    h = int(round(math.sqrt(target / aspect)))
    if 0 < w <= width and 0 < h <= height:
      return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
  ratio = width / height
  if ratio < aspect_range[0]:
    w, h = width, int(round(width / aspect_range[0]))
  elif ratio > aspect_range[1]:
    h, w = height, int(round(height * aspect_range[1]))
  else:
    h, w = height, width
  return (height - h) // 2, (width - w) // 2, h, w


def center_crop(image, out: int, crop_fraction: float, channels: int) -> np.ndarray:
  """Evaluation: the shorter side resized to ``out / crop_fraction``, the centre ``out`` square
  (torchvision's Resize + CenterCrop; a JPEG decoded at the smallest DCT scale that still has
  that resolution)."""
  short = int(round(out / crop_fraction))
  array = decode(image, channels, _reduction(image, min(size(image)), short))
  scale = short / min(array.shape[:2])
  resized = resize(array, max(short, int(round(array.shape[0] * scale))),
                   max(short, int(round(array.shape[1] * scale))))
  top, left = (resized.shape[0] - out) // 2, (resized.shape[1] - out) // 2
  return resized[top:top + out, left:left + out]
