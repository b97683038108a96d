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
  """Sets what JAX reads before its first device starts; what the user set is kept: ``XLA_FLAGS``
  with its own ``--xla_force_host_platform_device_count``, and ``JAX_COMPILATION_CACHE_DIR``
  (empty: no cache)."""
  xla_flags = os.environ.get('XLA_FLAGS', '')
  if DEVICE_COUNT_FLAG not in xla_flags:  # read when the CPU backend starts, not at import
    count = host_devices(os.cpu_count() or 1, batch_sizes)
    os.environ['XLA_FLAGS'] = f'{xla_flags} {DEVICE_COUNT_FLAG}={count}'.strip()
  # Tiny programs recompile faster than they load; everything else is kept.
  cache = {'JAX_COMPILATION_CACHE_DIR': cache_directory(),
           'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0.5'}
  for name, value in cache.items():
    os.environ.setdefault(name, value)
  if 'jax' in sys.modules:  # a config file imported it: its options were read from the env already
    import jax  # pylint: disable=g-import-not-at-top
    jax.config.update('jax_compilation_cache_dir', os.environ['JAX_COMPILATION_CACHE_DIR'] or None)
    jax.config.update('jax_persistent_cache_min_compile_time_secs',
                      float(os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS']))
