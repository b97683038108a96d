"""Command line: absl flags only; the work is `cnn_jax.train.loop.train_and_evaluate`.

  python -m cnn_jax.main --config=experiments/X.py --workdir=DIR [--config.a.b=v ...]
  python -m cnn_jax.main --config=experiments/X.py [--config.a.b=v ...] --print_config
Multi-host: add --coordinator_address=HOST:PORT --num_processes=N --process_id=I on every host
(on SLURM or Cloud TPU, omit them: JAX finds its peers itself).
"""

import ast
import gc
import os
import sys
import time

from absl import app, flags, logging
from ml_collections import config_flags

from cnn_jax import console, host
from cnn_jax.errors import ConfigError

DEFAULT_CONFIG = 'default'
# No default here: a default config would be parsed, with the overrides, at import time.
_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Experiment config: a file with get_config(), or the name of one in the '
    f'installed experiments package (e.g. cifar10_resnet18); default {DEFAULT_CONFIG}. Every field '
    'is a flag, --config.FIELD=VALUE (model fields: --config.model.kwargs.FIELD=VALUE, listed by '
    './launch.sh models NAME); --print_config shows them all, resolved.', lock_config=True)
_PRINT_CONFIG = flags.DEFINE_bool('print_config', False,
                                  'Print the resolved config (overrides applied) and exit.')
_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Run directory; default runs/<config>-<time>. The same workdir resumes.')
_COORDINATOR = flags.DEFINE_string('coordinator_address', None, 'HOST:PORT of process 0.')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Processes (hosts) in the job.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process, 0 .. num_processes-1.')


# A launch mistake (flag, config, data) exits with this code, a failure while training with 1.
USAGE_ERROR = 2
FLAGS_HELP = ('flags are --config=NAME|FILE, --workdir=DIR and --config.FIELD=VALUE; every field: '
              './launch.sh --print_config; every flag: ./launch.sh --help')


def _fail(message: str, code: int = USAGE_ERROR):
  """One line on stderr and the exit code; the traceback only with --verbosity=1 (or more)."""
  verbose = any(a.startswith(('--verbosity=', '-v=')) and a.split('=')[1] not in ('0', '-1')
                for a in sys.argv[1:])
  if verbose and sys.exc_info()[0] is not None:
    raise  # pylint: disable=misplaced-bare-raise
  print(f'Error: {message}', file=sys.stderr, flush=True)
  sys.exit(code)


def _initialize_distributed() -> None:
  import jax  # pylint: disable=g-import-not-at-top
  if _COORDINATOR.value:
    if _NUM_PROCESSES.value is None or _PROCESS_ID.value is None:
      raise ConfigError('--coordinator_address needs --num_processes and --process_id too.')
    jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  elif int(os.environ.get('SLURM_NTASKS', '1')) > 1 or 'TPU_WORKER_HOSTNAMES' in os.environ:
    jax.distributed.initialize()  # auto-detects the cluster


MODEL_KWARGS = '--config.model.kwargs.'
# --config.model.kwargs.FIELD=VALUE, in order; parsed here since the fields are the model's own.
_model_overrides: dict[str, object] = {}


def _literal(text: str):
  """A command-line value: a Python literal (numbers, tuples, None, True), true/false, or text."""
  if text.lower() in ('true', 'false'):
    return text.lower() == 'true'
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def _take_model_overrides(argv: list[str]) -> list[str]:
  """Removes the model-field overrides from ``argv`` into `_model_overrides` (the last wins)."""
  rest, i = [], 0
  while i < len(argv):
    arg = argv[i]
    if arg.startswith(MODEL_KWARGS):
      field, has_value, value = arg[len(MODEL_KWARGS):].partition('=')
      if not has_value:
        if i + 1 == len(argv) or argv[i + 1].startswith('--'):
          raise ConfigError(f'{arg} needs a value: {arg}=VALUE.')
        value, i = argv[i + 1], i + 1
      _model_overrides[field] = _literal(value)
    else:
      rest.append(arg)
    i += 1
  return rest


def resolve_model_fields(config, overrides: dict) -> None:
  """Sets ``config.model.kwargs`` to the experiment's kwargs plus ``overrides``, typed by the
  model's fields; kwargs the model lacks (left by another model) are dropped with a warning."""
  from cnn_jax import models  # pylint: disable=g-import-not-at-top
  kwargs, dropped = models.resolve_kwargs(config.model.name, dict(config.model.kwargs), overrides)
  if dropped:
    logging.warning('Dropping config.model.kwargs %s: %s has no such field (the experiment set '
                    'them for another model).', ', '.join(dropped), config.model.name)
  with config.unlocked():
    config.model.kwargs = kwargs


def _experiments_dir() -> str:
  import experiments  # pylint: disable=g-import-not-at-top
  return os.path.dirname(experiments.__file__)


def _config_path(value: str) -> str:
  """``--config``'s value with a bare experiment name (``default``) made the path of its file;
  a name or file that does not exist is a usage error naming the shipped experiments."""
  path, colon, args = value.partition(':')
  if not (os.sep in path or path.endswith('.py')):
    path = os.path.join(_experiments_dir(), f'{path}.py')
  if not os.path.isfile(path):
    shipped = sorted(n[:-3] for n in os.listdir(_experiments_dir())
                     if n.endswith('.py') and not n.startswith('_') and n != 'base.py')
    _fail(f'--config={value}: no such file ({os.path.abspath(path)}). Give an experiment file, or '
          f'the name of a shipped one: {", ".join(shipped)}.')
  return path + colon + args


def _one_line(error: BaseException) -> str:
  """An error's message in one line: a KeyError's text unquoted, a wrapped traceback's last line."""
  if not isinstance(error, KeyError) and isinstance(error.__context__, KeyError):
    error = error.__context__
  text = str(error.args[0] if isinstance(error, KeyError) and error.args else error)
  if 'Traceback (most recent call last)' in text:
    text = [line for line in text.splitlines() if line.strip()][-1]
  return ' '.join(text.split())


def parse_flags(argv: list[str]) -> list[str]:
  """absl's parser, defaulting --config; every flag or config mistake is one line (`_fail`)."""
  if not any(a.startswith('--config=') or a == '--config' for a in argv[1:]):
    argv = [argv[0], f'--config={DEFAULT_CONFIG}', *argv[1:]]
  argv = [f'--config={_config_path(a[len("--config="):])}' if a.startswith('--config=') else a
          for a in argv]
  try:
    # ml_collections finds the overrides in sys.argv itself: the model's fields must leave both,
    # and so must all but the last of a field given twice (absl would join two tuples into one).
    argv = _take_model_overrides(argv)
  except ConfigError as error:
    _fail(str(error))
  last = {a.partition('=')[0]: i for i, a in enumerate(argv) if a.startswith('--config.')}
  argv = sys.argv = [a for i, a in enumerate(argv)
                     if not a.startswith('--config.') or last[a.partition('=')[0]] == i]
  try:
    return flags.FLAGS(argv)
  except flags.Error as error:
    config_file = next(a for a in argv if a.startswith('--config='))
    if str(error).startswith(f'flag {config_file}:'):  # the file itself did not load
      _fail(f'Could not load {config_file}: {_one_line(error)}')
    _fail(f'{_one_line(error)} ({FLAGS_HELP}).')
  except (AttributeError, KeyError) as error:
    _fail(f'Unknown config field {_one_line(error)} Configs are locked, so a typo cannot add a '
          'field silently: check the spelling against ./launch.sh --print_config (every field).')


def main(argv) -> None:
  console.configure(logging.get_absl_handler())
  if len(argv) > 1:
    _fail(f'Unexpected arguments {" ".join(argv[1:])}: {FLAGS_HELP}.')
  if (_WORKDIR.value or '').startswith('-'):
    _fail(f'--workdir took {_WORKDIR.value!r} as its value: write --workdir=DIR.')
  config = _CONFIG.value
  host.configure(config)  # before JAX starts
  # The imports leave hundreds of thousands of objects that live as long as the process, and
  # each full collection would walk them all, before the first step and in every trace after;
  # frozen, collections leave them out.
  gc.disable()
  # pylint: disable-next=g-import-not-at-top
  from cnn_jax.train import checkpoint, loop, workdir as workdir_lib
  gc.freeze()
  gc.enable()
  config_path = config_flags.get_config_filename(flags.FLAGS['config'])
  name = os.path.splitext(os.path.basename(config_path))[0]
  workdir = _WORKDIR.value or os.path.join('runs', f'{name}-{time.strftime("%Y%m%d-%H%M%S")}')
  try:
    resolve_model_fields(config, _model_overrides)
    if _PRINT_CONFIG.value:
      # One line a field, as the flag that sets it.
      for field, value in workdir_lib.flatten(config.to_dict()).items():
        print(workdir_lib.as_flag(field, value))
      return
    _initialize_distributed()
    logging.info('Training %s into %s', console.shown(config_path), console.shown(workdir))
    loop.train_and_evaluate(config, workdir)
  except ConfigError as error:
    # What went wrong and how to fix it is the message; the traceback is for --verbosity=1.
    _fail(_one_line(error))
  except (OSError, FloatingPointError, checkpoint.CheckpointError) as error:
    _fail(_one_line(error), code=1)


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
