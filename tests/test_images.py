"""Variable-size images, one example at a time: the inception crop by its definition, crops that
hold only image (no padding) and reach every part of it, evaluation equal to PIL's resize and
centre crop, JPEG decoding at reduced scale, and formats and channels."""

import io

import numpy as np
import pytest
from PIL import Image

from cnn_jax.data import augment, images


def photo(height: int, width: int, seed: int = 0, channels: int = 3) -> np.ndarray:
  """A smooth random picture with pixel values in [40, 215] (no black anywhere)."""
  rng = np.random.default_rng(seed)
  coarse = rng.random((height // 16 + 2, width // 16 + 2, channels))
  big = Image.fromarray((coarse * 175 + 40).astype(np.uint8).squeeze(-1) if channels == 1
                        else (coarse * 175 + 40).astype(np.uint8))
  return np.asarray(big.resize((width, height), Image.BILINEAR)).reshape(height, width, channels)


def encode(array: np.ndarray, fmt: str = 'JPEG') -> bytes:
  out = io.BytesIO()
  Image.fromarray(array.squeeze(-1) if array.shape[-1] == 1 else array).save(out, fmt, quality=95)
  return out.getvalue()


def test_inception_boxes_follow_the_area_and_aspect_ranges_and_fit_the_image():
  rng = np.random.default_rng(0)
  areas, aspects = [], []
  for _ in range(2000):  # a square image: wide and tall boxes fit alike
    top, left, h, w = images.inception_box(rng, 400, 400, (0.08, 1.0), (3 / 4, 4 / 3))
    assert 0 <= top and top + h <= 400 and 0 <= left and left + w <= 400 and h > 0 and w > 0
    areas.append(h * w / (400 * 400))
    aspects.append(w / h)
  areas, aspects = np.array(areas), np.array(aspects)
  assert areas.min() >= 0.08 - 0.01 and areas.max() <= 1.0
  assert aspects.min() >= 0.75 - 0.02 and aspects.max() <= 4 / 3 + 0.02
  # Log-uniform aspect: as many wide boxes as tall ones; the area spans its range.
  assert abs(np.mean(np.log(aspects) > 0) - 0.5) < 0.05
  assert areas.min() < 0.15 and np.quantile(areas, 0.9) > 0.7
  # A strip no draw fits: the largest centred box of an allowed aspect.
  assert images.inception_box(rng, 10, 200, (0.5, 1.0), (3 / 4, 4 / 3), attempts=3) == (
      0, 93, 10, 13)


def test_training_crops_hold_only_image_and_reach_all_of_it():
  picture = photo(200, 300)
  data = encode(picture)
  params = augment.plan(['inception_crop'])['decode'][0]
  config = _params()
  decoded = images.decode(data, 3)
  covered = np.zeros((200, 300), bool)
  rng = np.random.default_rng(1)
  for _ in range(400):
    state = rng.bit_generator.state
    crop = params.fn(data, rng, config, 128, 3)  # no box is 256 px: decoded at full scale
    rng.bit_generator.state = state  # the same draw again, to see which box it was
    top, left, h, w = images.inception_box(rng, 200, 300, config.area_range, config.aspect_range)
    covered[top:top + h, left:left + w] = True
    # The box of the photo itself, resized: no padding, ever (the photo has no dark pixels).
    np.testing.assert_array_equal(crop, images.resize(decoded[top:top + h, left:left + w], 128, 128))
    assert crop.shape == (128, 128, 3) and crop.min() >= decoded.min() > 30
  # All of the photo is seen, its borders too, not just a centre square (a corner pixel itself
  # needs a box at offset 0 in both axes: rare by design).
  assert covered.mean() > 0.999 and covered[:, :3].any(0).all() and covered[:, -3:].any(0).all()
  assert covered[:3].any(1).all() and covered[-3:].any(1).all()


def test_evaluation_crop_equals_pil_resize_then_centre_crop():
  picture = photo(375, 500, seed=2)
  ours = images.center_crop(encode(picture), 224, 0.875, 3)
  decoded = Image.open(io.BytesIO(encode(picture)))
  scale = 256 / 375
  resized = np.asarray(decoded.resize((round(500 * scale), 256), Image.BILINEAR))
  top, left = (resized.shape[0] - 224) // 2, (resized.shape[1] - 224) // 2
  reference = resized[top:top + 224, left:left + 224].astype(float)
  assert ours.shape == (224, 224, 3)
  difference = np.abs(ours - reference)
  assert difference.mean() < 1.0 and np.quantile(difference, 0.99) < 4


def test_a_large_jpeg_is_decoded_at_reduced_scale_with_the_same_result(monkeypatch):
  picture = photo(1200, 1600, seed=3)
  data = encode(picture)
  scales = []
  decode = images.decode
  monkeypatch.setattr(images, 'decode', lambda image, channels, reduction=1: (
      scales.append(reduction), decode(image, channels, reduction))[1])
  box = (100, 200, 1000, 1000)
  reduced = images.crop_and_resize(data, box, 224, 3)
  full = images.resize(decode(data, 3)[100:1100, 200:1200], 224, 224)
  assert scales == [4]  # 1000 px at 1/4 is 250 >= 224; at 1/8 it would be 125
  assert np.abs(reduced.astype(float) - full).mean() < 2.0
  monkeypatch.undo()
  images.crop_and_resize(picture, box, 224, 3)  # a decoded array is cropped as it is


@pytest.mark.parametrize('fmt,channels', [('JPEG', 3), ('PNG', 3), ('PNG', 1), ('JPEG', 1)])
def test_formats_and_channels_decode_to_what_the_dataset_asks(fmt, channels):
  picture = photo(40, 50, channels=channels)
  data = encode(picture, fmt)
  assert images.size(data) == (40, 50)
  colour, gray = images.decode(data, 3), images.decode(np.frombuffer(data, np.uint8), 1)
  assert colour.shape == (40, 50, 3) and gray.shape == (40, 50, 1)
  if channels == 1:
    np.testing.assert_array_equal(colour[..., 0], colour[..., 2])
  error = np.abs(images.decode(data, channels).astype(float) - picture)
  assert error.max() == 0 if fmt == 'PNG' else error.mean() < 2  # PNG is lossless
  with pytest.raises(images.UnreadableImage):
    images.decode(b'not an image', 3)


def _params():
  from experiments import base  # pylint: disable=g-import-not-at-top
  return base.get_config().data.augment
