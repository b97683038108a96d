"""``python -m cnn_jax.models [NAME]`` (``./launch.sh models [NAME]``): the registered models, or
one model's fields with their defaults and its native input."""

import sys

from cnn_jax import models
from cnn_jax.errors import ConfigError

if __name__ == '__main__':
  try:
    print(models.describe(sys.argv[1] if len(sys.argv) > 1 else None))
  except ConfigError as error:
    sys.exit(f'Error: {error}')
