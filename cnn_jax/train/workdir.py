"""One run per workdir: a lock, a config record that is never rewritten, and what a resume may change.

``WORKDIR/config.json`` is the config the run started with; a resume that changes allowed fields
(epochs, evaluation cadence, augmentation, learning rate, ...) adds ``config.<step>.json``. A
resume that changes what the checkpoints hold (the model, the optimiser's state) or what a step
means (batch size, seed, training data) is refused before anything is touched, unless
``config.resume='restart'`` asks to archive the old run and start afresh.
"""

import contextlib
import fcntl
import json
import os
import shutil
import socket
import time

import jax
import ml_collections
from absl import logging

from cnn_jax.errors import ConfigError

RESUME_MODES = ('auto', 'restart')
# Fields whose change makes the checkpoints unusable or the resumed data stream a different one.
STATE_FIELDS = ('model.', 'optim.name', 'optim.momentum', 'optim.nesterov', 'optim.clip_norm',
                'optim.weight_decay', 'batch_size', 'seed', 'data.name', 'data.train_split',
                'data.val_split', 'data.holdout_fraction', 'loss')
RUN_FILES = ('checkpoints', 'tensorboard', 'metrics.jsonl', 'final_metrics.json')


def flatten(tree: dict, prefix: str = '') -> dict:
  """``{'a.b': value}`` of a nested dict; tuples and lists compare equal (JSON has no tuples)."""
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(flatten(value, f'{prefix}{key}.'))
    else:
      flat[f'{prefix}{key}'] = list(value) if isinstance(value, tuple) else value
  return flat


def as_flag(field: str, value) -> str:
  """The command-line flag that sets ``field`` to ``value`` (JSON's lists as the tuples they were)."""
  return f'--config.{field}={tuple(value) if isinstance(value, list) else value!r}'


def _as_dict(config: ml_collections.ConfigDict) -> dict:
  return json.loads(config.to_json_best_effort())


def differences(old: dict, new: dict) -> dict:
  """``{field: (old, new)}`` for every field whose value differs (or exists in one only)."""
  old, new = flatten(old), flatten(new)
  return {k: (old.get(k), new.get(k)) for k in sorted(set(old) | set(new))
          if old.get(k) != new.get(k)}


def _config_path(workdir: str) -> str:
  return os.path.join(workdir, 'config.json')


def check_resume(config: ml_collections.ConfigDict, workdir: str, has_checkpoints: bool) -> dict:
  """Compares ``config`` with the run's record; returns the allowed differences.

  Raises:
    ConfigError: a difference in a STATE_FIELDS field while checkpoints exist (and no restart).
  """
  path = _config_path(workdir)
  if not os.path.exists(path):
    return {}
  with open(path, encoding='utf-8') as f:
    changed = differences(json.load(f), _as_dict(config))
  changed.pop('resume', None)
  blocking = {k: v for k, v in changed.items() if k.startswith(STATE_FIELDS)}
  # Only float16 keeps a loss scale in the state: its checkpoints and the others' differ in kind.
  old, new = changed.get('compute_dtype', (None, None))
  if (old == 'float16') != (new == 'float16'):
    blocking['compute_dtype'] = (old, new)
  if blocking and has_checkpoints and config.resume != 'restart':
    listed = '; '.join(f'{k}: {a!r} -> {b!r}' for k, (a, b) in blocking.items())
    raise ConfigError(
        f'{workdir} holds a run whose checkpoints this config cannot continue ({listed}). Use '
        'another --workdir, or --config.resume=restart to archive that run and start afresh.')
  return changed


def record(config: ml_collections.ConfigDict, workdir: str, step: int, changed: dict) -> None:
  """Writes ``config.json`` when the run starts from scratch (no checkpoint is described by an
  older one), or ``config.<step>.json`` for a resume at ``step`` with a changed config."""
  if jax.process_index() != 0:
    return
  path = _config_path(workdir)
  if step and not changed:
    return
  if step:
    path = os.path.join(workdir, f'config.{step}.json')
    logging.warning('Resuming at step %d with a changed config: %s', step,
                    '; '.join(f'{k}: {a!r} -> {b!r}' for k, (a, b) in changed.items()))
  with open(path, 'w', encoding='utf-8') as f:
    f.write(config.to_json_best_effort(indent=2))


def archive(workdir: str) -> str | None:
  """Moves a previous run's files into ``WORKDIR/archive-<time>/``; returns that folder."""
  present = [name for name in os.listdir(workdir)
             if name in RUN_FILES or (name.startswith('config') and name.endswith('.json'))]
  if not present or jax.process_index() != 0:
    return None
  target = os.path.join(workdir, f'archive-{time.strftime("%Y%m%d-%H%M%S")}')
  os.makedirs(target)
  for name in sorted(present):
    shutil.move(os.path.join(workdir, name), target)
  logging.warning('config.resume=restart: the previous run in %s is archived in %s.', workdir,
                  target)
  return target


@contextlib.contextmanager
def claim(workdir: str):
  """Holds ``WORKDIR/lock`` (process 0) while a run writes there: a second run is refused.

  The lock is an OS file lock, released when its process ends however it ends, so a killed
  run never leaves a stale lock; the file names the holder for the error message. A workdir this
  claim made is removed again when the run wrote nothing into it (a mistake found early).
  """
  created = not os.path.exists(workdir)
  os.makedirs(workdir, exist_ok=True)
  for folder in (workdir, os.path.join(workdir, 'checkpoints')):
    if os.path.exists(folder) and not os.access(folder, os.W_OK):
      raise ConfigError(f'{folder} is not writable; pick another --workdir or fix its '
                        'permissions.')
  if jax.process_index() != 0:
    yield
    return
  handle = open(os.path.join(workdir, 'lock'), 'a+', encoding='utf-8')
  try:
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    handle.seek(0)
    holder = handle.read().strip() or 'another process'
    handle.close()
    raise ConfigError(f'{workdir} is in use by a running training ({holder}); wait for it to '
                      'finish or pick another --workdir.') from None
  handle.seek(0)
  handle.truncate()
  handle.write(f'host {socket.gethostname()} pid {os.getpid()}\n')
  handle.flush()
  try:
    yield
  finally:
    fcntl.flock(handle, fcntl.LOCK_UN)
    handle.close()
    if created and os.listdir(workdir) == ['lock']:
      shutil.rmtree(workdir)


def _tuples(value):
  """JSON turns tuples into lists; model fields and configs expect the tuples back."""
  if isinstance(value, dict):
    return {k: _tuples(v) for k, v in value.items()}
  if isinstance(value, list):
    return tuple(_tuples(v) for v in value)
  return value


def read_config(workdir: str, step: int | None = None) -> ml_collections.ConfigDict:
  """The config that produced checkpoint ``step``: ``config.json`` (the start), or the newest
  ``config.<s>.json`` with ``s < step`` (a resume at ``s`` with allowed changes trains on from
  there)."""
  path = os.path.join(workdir, 'config.json')
  if step is not None and os.path.isdir(workdir):
    resumed = [int(n.split('.')[1]) for n in os.listdir(workdir)
               if n.startswith('config.') and n.split('.')[1].isdigit() and n.endswith('.json')]
    resumed = [s for s in resumed if s < step]
    if resumed:
      path = os.path.join(workdir, f'config.{max(resumed)}.json')
  if not os.path.isdir(workdir):
    raise FileNotFoundError(f'No run at {workdir}: the directory does not exist; pass the '
                            '--workdir of a training run.')
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{workdir} is not a run directory: it has no config.json (found: '
                            f'{sorted(os.listdir(workdir)) or "nothing"}); pass the --workdir of a '
                            'training run.')
  with open(path, encoding='utf-8') as f:
    return ml_collections.ConfigDict(_tuples(json.load(f)))
