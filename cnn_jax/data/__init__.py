"""Datasets: TFDS sources (no TensorFlow at run time), offline builders, grain input pipelines."""
