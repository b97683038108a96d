"""Datasets: TFDS sources (no TensorFlow at run time), offline builders, grain input pipelines.

The augmentation modules are imported here: each registers its augmentations by name.
"""

from cnn_jax.data import augment, autoaugment, mixing  # noqa: F401  pylint: disable=unused-import
