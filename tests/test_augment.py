"""Augmentations by name, each against its definition: the registry's errors, colour jitter,
RandAugment's N ops, AutoAugment's policy, random erasing, and mixup / cutmix whose label weights
equal what they did to the pixels."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_jax.data import augment, autoaugment, mixing
from cnn_jax.errors import ConfigError
from experiments import base
from tests.test_images import photo


def params(**overrides):
  config = base.get_config().data.augment
  config.update(overrides)
  return config


def test_the_registry_names_every_op_and_refuses_unknown_or_misplaced_ones():
  stages = augment.plan(['inception_crop', 'randaugment', 'flip', 'mixup', 'color_jitter'], 2)
  assert [op.name for op in stages['decode']] == ['inception_crop']
  assert [op.name for op in stages['example']] == ['randaugment', 'color_jitter']  # listed order
  assert [op.name for op in stages['batch']] == ['flip']
  assert [op.name for op in stages['step']] == ['mixup']
  with pytest.raises(ConfigError, match="names 'flipp': expected any of .*'flip'"):
    augment.plan(['flipp'])
  with pytest.raises(ConfigError, match="'shift', which works on examples with 1 spatial"):
    augment.plan(['shift'], 2)
  with pytest.raises(ConfigError, match='keep one'):
    augment.register('second_crop', 'decode')(lambda *a: None)
    try:
      augment.plan(['inception_crop', 'second_crop'])
    finally:
      del augment.AUGMENTATIONS['second_crop']


def test_color_jitter_scales_brightness_contrast_and_saturation_within_its_range():
  image = photo(32, 48)
  rng = np.random.default_rng(0)
  np.testing.assert_array_equal(augment.color_jitter(image, rng, params(jitter=0.0)), image)
  gray = np.repeat(photo(32, 48, channels=1), 3, -1)
  jittered = augment.color_jitter(gray, rng, params(jitter=0.4))
  np.testing.assert_array_equal(jittered[..., 0], jittered[..., 1])  # gray stays gray
  ratios = [augment.color_jitter(image, np.random.default_rng(s), params(jitter=0.4)).mean() /
            image.mean() for s in range(50)]
  # Brightness and contrast factors in [0.6, 1.4]: the mean moves by at most that much.
  assert 0.55 < min(ratios) < 0.9 and 1.1 < max(ratios) < 1.45


def test_randaugment_applies_exactly_n_ops_at_magnitude_m():
  image = photo(40, 40)
  steps = autoaugment.randaugment_steps(np.random.default_rng(3), 3, 9)
  assert len(steps) == 3 and all(abs(m) == pytest.approx(9 / 30) for _, m in steps)
  assert {name for name, _ in steps} <= set(autoaugment.RANDAUGMENT_OPS)
  out = autoaugment.randaugment(image, np.random.default_rng(3), params(randaugment_n=3,
                                                                        randaugment_m=9))
  np.testing.assert_array_equal(out, autoaugment.apply(image, steps))
  for name in autoaugment.OPS:  # each op does what its name says, and only Identity nothing
    changed = not np.array_equal(autoaugment.apply(image, [(name, 1.0)]), image)
    assert changed == (name != 'Identity'), name
  drawn = [len(autoaugment.randaugment_steps(np.random.default_rng(s), 2, 5)) for s in range(20)]
  assert drawn == [2] * 20


def test_autoaugment_draws_one_sub_policy_of_the_imagenet_policy():
  assert len(autoaugment.IMAGENET_POLICY) == 25
  counts = {}
  for seed in range(400):
    steps = autoaugment.autoaugment_steps(np.random.default_rng(seed))
    assert len(steps) <= 2
    for name, magnitude in steps:
      assert 0 <= abs(magnitude) <= 1 and name in autoaugment.OPS
      counts[name] = counts.get(name, 0) + 1
  # Equalize is the policy's most frequent op: in 12 of the 50 slots.
  assert max(counts, key=counts.get) == 'Equalize'
  out = autoaugment.autoaugment(photo(40, 40), np.random.default_rng(0), params())
  assert out.shape == (40, 40, 3) and out.dtype == np.uint8


def test_random_erasing_replaces_one_box_of_2_to_33_percent_with_its_probability():
  image = photo(60, 80)
  assert augment.random_erasing(image, np.random.default_rng(0), params(erasing_prob=0.0)) is image
  for seed in range(20):
    out = augment.random_erasing(image, np.random.default_rng(seed), params(erasing_prob=1.0))
    rows, cols = np.nonzero((out != image).any(-1))
    height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
    assert 0.02 * 0.9 <= height * width / (60 * 80) <= 1 / 3 + 0.02
    # One rectangle: everything outside its bounding box is untouched.
    outside = np.ones((60, 80), bool)
    outside[rows.min():rows.max() + 1, cols.min():cols.max() + 1] = False
    np.testing.assert_array_equal(out[outside], image[outside])


def _batch():
  return jnp.asarray(np.stack([photo(16, 16, seed=s) for s in range(4)]), jnp.float32)


def test_mixup_label_weight_equals_its_pixel_weight():
  images = _batch()
  mixed, weight = mixing.mixup(jax.random.key(0), images, params(mixup_alpha=0.4))
  weight = float(weight)
  assert 0 < weight < 1
  np.testing.assert_allclose(mixed, weight * images + (1 - weight) * jnp.roll(images, 1, 0),
                             rtol=1e-6)
  # Solved back from the pixels alone: the same weight.
  a, b = np.asarray(images[1]), np.asarray(images[0])
  recovered = np.sum((np.asarray(mixed[1]) - b) * (a - b)) / np.sum((a - b) ** 2)
  assert recovered == pytest.approx(weight, rel=1e-4)


def test_cutmix_label_weight_equals_the_area_left_unpasted():
  images = _batch()
  for seed in range(10):
    mixed, weight = mixing.cutmix(jax.random.key(seed), images, params(cutmix_alpha=1.0))
    pasted = np.asarray((mixed != images).any(-1))  # [B, H, W]: where the partner shows
    assert pasted[0].any() or float(weight) == 1.0
    np.testing.assert_array_equal(pasted[0], pasted[1])  # one box for the batch
    assert float(weight) == pytest.approx(1 - pasted[0].mean(), abs=1e-6)
    rows, cols = np.nonzero(pasted[0])
    if len(rows):  # a rectangle, clipped to the image
      assert pasted[0][rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()


@pytest.mark.slow
def test_one_of_the_listed_mixes_is_chosen_per_step():
  images = _batch()
  ops = augment.plan(['mixup', 'cutmix'])['step']
  kinds = set()
  for seed in range(12):
    mixed, weight = mixing.mix(jax.random.key(seed), images, ops, params())
    changed = np.asarray((mixed != images).any(-1))[0]
    kinds.add('cutmix' if changed.any() and not changed.all() else 'mixup')
    assert 0 <= float(weight) <= 1
  assert kinds == {'mixup', 'cutmix'}
