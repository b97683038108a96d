"""Which form convolutions compute in (`cnn_jax.layers.convolve` lists them): ``use(impl)`` for
everything traced inside a block, ``resolve()`` for the form in force. Apart from the layers, so
that what reads the form (the layers, `cnn_jax.arithmetic`'s tracer) imports nothing else."""

import contextlib
import contextvars
from collections.abc import Iterator

import jax

IMPLS = ('auto', 'xla', 'matmul', 'mixed')
_default = contextvars.ContextVar('conv_impl', default='auto')


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
