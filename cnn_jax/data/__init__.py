"""Datasets: TFDS sources (no TensorFlow at run time), offline builders, grain input pipelines.

The builder and augmentation modules are imported here: each registers its datasets or its
augmentations by name (docs/extending.md).
"""

# pylint: disable-next=unused-import
from cnn_jax.data import (augment, autoaugment, digits, image_folder, mixing, mnist1d,  # noqa: F401
                          motifs, shapes)
from cnn_jax.data.registry import register_dataset
