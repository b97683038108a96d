"""RandAugment (Cubuk et al., 2020) and AutoAugment's ImageNet policy (Cubuk et al., 2019): one
table of PIL image operations, each taking a magnitude in [0, 1] of its range (the ranges of
torchvision's implementation); geometric ones fill with grey."""

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from cnn_jax.data.augment import register

FILL = 128


def _affine(image: Image.Image, matrix: tuple) -> Image.Image:
  return image.transform(image.size, Image.Transform.AFFINE, matrix, Image.Resampling.NEAREST,
                         fillcolor=(FILL,) * len(image.getbands()))


def _enhance(enhancer):
  return lambda image, v: enhancer(image).enhance(1.0 + v)


# name: (op(image, signed value), largest value, signed). Value = magnitude * largest, its sign
# random for signed ops.
OPS = {
    'Identity': (lambda image, v: image, 0.0, False),
    'ShearX': (lambda image, v: _affine(image, (1, v, 0, 0, 1, 0)), 0.3, True),
    'ShearY': (lambda image, v: _affine(image, (1, 0, 0, v, 1, 0)), 0.3, True),
    # Translations as a fraction of the side: 150 px of a 331 px image.
    'TranslateX': (lambda image, v: _affine(image, (1, 0, v * image.size[0], 0, 1, 0)),
                   150 / 331, True),
    'TranslateY': (lambda image, v: _affine(image, (1, 0, 0, 0, 1, v * image.size[1])),
                   150 / 331, True),
    'Rotate': (lambda image, v: image.rotate(v, Image.Resampling.NEAREST,
                                             fillcolor=(FILL,) * len(image.getbands())), 30.0,
               True),
    'Brightness': (_enhance(ImageEnhance.Brightness), 0.9, True),
    'Color': (_enhance(ImageEnhance.Color), 0.9, True),
    'Contrast': (_enhance(ImageEnhance.Contrast), 0.9, True),
    'Sharpness': (_enhance(ImageEnhance.Sharpness), 0.9, True),
    'Posterize': (lambda image, v: ImageOps.posterize(image, 8 - int(round(v))), 4.0, False),
    'Solarize': (lambda image, v: ImageOps.solarize(image, 255 - v), 255.0, False),
    'AutoContrast': (lambda image, v: ImageOps.autocontrast(image), 0.0, False),
    'Equalize': (lambda image, v: ImageOps.equalize(image), 0.0, False),
    'Invert': (lambda image, v: ImageOps.invert(image), 0.0, False),
}
# RandAugment draws from these (the paper's list; Invert is AutoAugment's only).
RANDAUGMENT_OPS = tuple(name for name in OPS if name != 'Invert')
# AutoAugment's ImageNet policy: 25 sub-policies of two (op, probability, magnitude level 0-9).
IMAGENET_POLICY = (
    (('Posterize', 0.4, 8), ('Rotate', 0.6, 9)), (('Solarize', 0.6, 5), ('AutoContrast', 0.6, 0)),
    (('Equalize', 0.8, 0), ('Equalize', 0.6, 0)), (('Posterize', 0.6, 7), ('Posterize', 0.6, 6)),
    (('Equalize', 0.4, 0), ('Solarize', 0.2, 4)), (('Equalize', 0.4, 0), ('Rotate', 0.8, 8)),
    (('Solarize', 0.6, 3), ('Equalize', 0.6, 0)), (('Posterize', 0.8, 5), ('Equalize', 1.0, 0)),
    (('Rotate', 0.2, 3), ('Solarize', 0.6, 8)), (('Equalize', 0.6, 0), ('Posterize', 0.4, 6)),
    (('Rotate', 0.8, 8), ('Color', 0.4, 0)), (('Rotate', 0.4, 9), ('Equalize', 0.6, 0)),
    (('Equalize', 0.0, 0), ('Equalize', 0.8, 0)), (('Invert', 0.6, 0), ('Equalize', 1.0, 0)),
    (('Color', 0.6, 4), ('Contrast', 1.0, 8)), (('Rotate', 0.8, 8), ('Color', 1.0, 2)),
    (('Color', 0.8, 8), ('Solarize', 0.8, 7)), (('Sharpness', 0.4, 7), ('Invert', 0.6, 0)),
    (('ShearX', 0.6, 5), ('Equalize', 1.0, 0)), (('Color', 0.4, 0), ('Equalize', 0.6, 0)),
    (('Equalize', 0.4, 0), ('Solarize', 0.2, 4)), (('Solarize', 0.6, 5), ('AutoContrast', 0.6, 0)),
    (('Invert', 0.6, 0), ('Equalize', 1.0, 0)), (('Color', 0.6, 4), ('Contrast', 1.0, 8)),
    (('Equalize', 0.8, 0), ('Equalize', 0.6, 0)),
)
AUTOAUGMENT_LEVELS = 10


def apply(image: np.ndarray, steps: list[tuple[str, float]]) -> np.ndarray:
  """[H, W, C] uint8 after the ops ``steps`` names, each with its signed magnitude in [-1, 1]."""
  pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
  for name, magnitude in steps:
    op, largest, _ = OPS[name]
    pil = op(pil, magnitude * largest)
  return np.asarray(pil).reshape(image.shape)


def _signed(rng: np.random.Generator, name: str, magnitude: float) -> tuple[str, float]:
  return name, -magnitude if OPS[name][2] and rng.random() < 0.5 else magnitude


def randaugment_steps(rng: np.random.Generator, n: int, m: float) -> list[tuple[str, float]]:
  """RandAugment's draw: ``n`` ops uniformly, each at magnitude ``m`` of 30."""
  names = rng.choice(RANDAUGMENT_OPS, size=n)
  return [_signed(rng, str(name), m / 30) for name in names]


def autoaugment_steps(rng: np.random.Generator) -> list[tuple[str, float]]:
  """AutoAugment's draw: one sub-policy of the ImageNet policy, each op kept with its
  probability."""
  policy = IMAGENET_POLICY[rng.integers(len(IMAGENET_POLICY))]
  return [_signed(rng, name, level / (AUTOAUGMENT_LEVELS - 1))
          for name, probability, level in policy if rng.random() < probability]


@register('randaugment', 'example', spatial_rank=2)
def randaugment(image: np.ndarray, rng: np.random.Generator, params) -> np.ndarray:
  """``params.randaugment_n`` ops at magnitude ``params.randaugment_m`` (0-30)."""
  return apply(image, randaugment_steps(rng, params.randaugment_n, params.randaugment_m))


@register('autoaugment', 'example', spatial_rank=2)
def autoaugment(image: np.ndarray, rng: np.random.Generator, params) -> np.ndarray:
  """One random sub-policy of AutoAugment's ImageNet policy."""
  del params
  return apply(image, autoaugment_steps(rng))
