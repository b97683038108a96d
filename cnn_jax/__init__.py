"""cnn_jax: convolutional networks in JAX/Flax."""
