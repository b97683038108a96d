"""User errors: a wrong config, command or dataset state, reported in one line."""


class ConfigError(ValueError):
  """A mistake the user can fix from the command line; `cnn_jax.main` prints it without a
  traceback (``--verbosity=1`` shows it)."""
