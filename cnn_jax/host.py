"""What a process sets before JAX starts: one XLA device per CPU core, and a persistent
compilation cache.

XLA's CPU convolutions and element-wise loops use one core per device, so a single device leaves
the other cores idle; one device per core, with the batch sharded over them, uses them all (the
loop already runs data-parallel). Compiled programs are kept on disk, so a second launch of the
same experiment skips its compiles.
"""

import os
import sys

DEVICE_COUNT_FLAG = '--xla_force_host_platform_device_count'


def cache_directory() -> str:
  """``$XDG_CACHE_HOME/cnn_jax/jax`` (``~/.cache/cnn_jax/jax``)."""
  root = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
  return os.path.join(root, 'cnn_jax', 'jax')


def host_devices(cores: int, batch_sizes: list[int]) -> int:
  """The most CPU devices, at most one per core, that every batch size divides into."""
  return max(d for d in range(1, max(cores, 1) + 1) if all(b % d == 0 for b in batch_sizes))


def configure(batch_sizes: list[int]) -> None:
  """Sets the environment JAX reads when it is first imported; what the user set is kept:
  ``XLA_FLAGS`` with its own ``--xla_force_host_platform_device_count``, and
  ``JAX_COMPILATION_CACHE_DIR`` (empty: no cache)."""
  if 'jax' in sys.modules:
    raise RuntimeError('host.configure must run before jax is imported.')
  xla_flags = os.environ.get('XLA_FLAGS', '')
  if DEVICE_COUNT_FLAG not in xla_flags:
    count = host_devices(os.cpu_count() or 1, batch_sizes)
    os.environ['XLA_FLAGS'] = f'{xla_flags} {DEVICE_COUNT_FLAG}={count}'.strip()
  os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', cache_directory())
  # Tiny programs recompile faster than they load; everything else is kept.
  os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0.5')
