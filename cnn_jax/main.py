"""Command line: absl flags only; the work is `cnn_jax.train.loop.train_and_evaluate`.

  python -m cnn_jax.main --config=experiments/X.py --workdir=DIR [--config.a.b=v ...]
Multi-host: add --coordinator_address=HOST:PORT --num_processes=N --process_id=I on every host
(on SLURM or Cloud TPU, omit them: JAX finds its peers itself).
"""

import os
import sys
import time

from absl import app, flags, logging
from ml_collections import config_flags

from cnn_jax.errors import ConfigError

DEFAULT_CONFIG = 'experiments/default.py'
# No default here: a default config would be parsed, with the overrides, at import time.
_CONFIG = config_flags.DEFINE_config_file(
    'config', None, f'Experiment config file (get_config()); default {DEFAULT_CONFIG}.',
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Run directory; default runs/<config>-<time>. The same workdir resumes.')
_COORDINATOR = flags.DEFINE_string('coordinator_address', None, 'HOST:PORT of process 0.')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Processes (hosts) in the job.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process, 0 .. num_processes-1.')


def _initialize_distributed() -> None:
  import jax  # pylint: disable=g-import-not-at-top
  if _COORDINATOR.value:
    if _NUM_PROCESSES.value is None or _PROCESS_ID.value is None:
      raise app.UsageError('--coordinator_address needs --num_processes and --process_id too.')
    jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  elif int(os.environ.get('SLURM_NTASKS', '1')) > 1 or 'TPU_WORKER_HOSTNAMES' in os.environ:
    jax.distributed.initialize()  # auto-detects the cluster


def parse_flags(argv: list[str]) -> list[str]:
  """absl's parser, defaulting --config and explaining a config override with a typo."""
  if not any(a.startswith('--config=') or a == '--config' for a in argv[1:]):
    argv = [argv[0], f'--config={DEFAULT_CONFIG}', *argv[1:]]
  try:
    return flags.FLAGS(argv)
  except (AttributeError, KeyError) as error:
    overrides = [a for a in argv[1:] if a.startswith('--config.')]
    raise SystemExit(
        f'Unknown config field {error} in {overrides}: configs are locked, so a typo cannot add a '
        'field silently. Check the spelling against the experiment file and experiments/base.py '
        '(e.g. --config.optim.lr=0.05).') from error


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments {argv[1:]}; flags are --config, --workdir, '
                         '--config.<field>=<value> and the multi-host flags.')
  from cnn_jax.train import checkpoint, loop  # pylint: disable=g-import-not-at-top
  # Orbax's per-save INFO chatter stays out of the training log; its warnings still show.
  logging.get_absl_handler().addFilter(checkpoint.OrbaxBelow())
  _initialize_distributed()
  config_path = config_flags.get_config_filename(flags.FLAGS['config'])
  name = os.path.splitext(os.path.basename(config_path))[0]
  workdir = _WORKDIR.value or os.path.join('runs', f'{name}-{time.strftime("%Y%m%d-%H%M%S")}')
  config = _CONFIG.value
  logging.info('Training %s into %s', config_path, workdir)
  try:
    loop.train_and_evaluate(config, workdir)
  except (ConfigError, OSError, FloatingPointError, checkpoint.CheckpointError) as error:
    # What went wrong and how to fix it is the message; the traceback is for --verbosity=1.
    if logging.get_verbosity() >= 1:
      raise
    print(f'Error: {error}', file=sys.stderr, flush=True)
    sys.exit(1)


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
