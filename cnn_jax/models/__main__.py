"""``python -m cnn_jax.models [NAME]`` (``./launch.sh models [NAME]``): the registered models, or
one model's fields with their defaults and its native input. ``--table [FILE]`` prints the zoo
table of docs/models.md, or rewrites it in FILE."""

import sys

from cnn_jax import models
from cnn_jax.errors import ConfigError
from cnn_jax.models import table

if __name__ == '__main__':
  args = sys.argv[1:]
  try:
    if args[:1] == ['--table']:
      if len(args) > 1:
        table.write(args[1])
      else:
        print(table.markdown())
    else:
      print(models.describe(args[0] if args else None))
  except (ConfigError, ValueError) as error:
    sys.exit(f'Error: {error}')
