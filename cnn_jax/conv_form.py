"""Which form convolutions compute in (`cnn_jax.layers.convolve` lists them): ``use(impl)`` for
everything traced inside a block, ``resolve()`` for the form in force; ``split_batch(n)``, how
many devices the traced batch is split over; and ``tuning(path)``, where the ways measured on this
machine are kept (`cnn_jax.layers.tuning`). Apart from the layers, so that what sets or reads
them (the layers, the train step, `cnn_jax.arithmetic`'s tracer) imports nothing else."""

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any, NamedTuple

import jax

IMPLS = ('auto', 'xla', 'matmul', 'mixed')
_default = contextvars.ContextVar('conv_impl', default='auto')
_batch_groups = contextvars.ContextVar('batch_groups', default=1)


class Tuning(NamedTuple):
  """What `tuning` set for what is traced now (`tuned`)."""
  path: str | None  # the tuning file; None: the rules' thresholds choose
  devices: int  # how many devices run what is traced at once
  budget: Any  # the `tuning.Budget` the timing is charged to; None: no bound


_tuning = contextvars.ContextVar('tuning', default=Tuning(None, 1, None))


@contextlib.contextmanager
def use(impl: str) -> Iterator[None]:
  """Makes ``impl`` the form of every `convolve` traced inside the block (per-call ones win)."""
  check(impl)
  token = _default.set(impl)
  try:
    yield
  finally:
    _default.reset(token)


def check(impl: str) -> None:
  if impl not in IMPLS:
    raise ValueError(f'conv_impl={impl!r}: expected one of {IMPLS}.')


def resolve(impl: str | None = None, platform: str | None = None) -> str:
  """``impl`` (default: the one in `use`), 'auto' made the platform's form."""
  impl = impl or _default.get()
  check(impl)
  if impl == 'auto':
    return 'mixed' if (platform or jax.default_backend()) == 'cpu' else 'xla'
  return impl


@contextlib.contextmanager
def split_batch(devices: int) -> Iterator[None]:
  """Says that the batch of what is traced inside the block is split over ``devices`` devices in
  equal parts (a jitted step data-parallel over a mesh); 1, the default, for one device or a
  per-device program (`jax.shard_map`, whose batch is already one device's)."""
  if devices < 1:
    raise ValueError(f'split_batch({devices}): expected a number of devices >= 1.')
  token = _batch_groups.set(devices)
  try:
    yield
  finally:
    _batch_groups.reset(token)


def batch_groups() -> int:
  """The number of devices `split_batch` says the traced batch is split over."""
  return _batch_groups.get()


@contextlib.contextmanager
def tuning(path: str | None, devices: int = 1, budget=None) -> Iterator[None]:
  """Makes the CPU rules traced inside the block choose each convolution's way by timing it on
  this machine, keeping the choices in the file at ``path`` (`cnn_jax.layers.tuning`); None (the
  default) leaves the choice to the rules' thresholds. ``devices``: how many devices run what is
  traced at once, each on its share of the batch (they share the cores, so each way is timed on
  all of them together). ``budget``: the `tuning.Budget` the timing is charged to; None, no
  bound."""
  if devices < 1:
    raise ValueError(f'tuning(devices={devices}): expected a number of devices >= 1.')
  token = _tuning.set(Tuning(path, devices, budget))
  try:
    yield
  finally:
    _tuning.reset(token)


def tuned() -> Tuning:
  """What `tuning` set for what is traced now: no file, one device and no bound outside it."""
  return _tuning.get()
