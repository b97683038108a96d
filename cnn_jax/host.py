"""What a process sets before JAX starts: one XLA device per CPU core, a persistent compilation
cache, and a memory allocator that keeps the pages it has.

XLA's own CPU convolutions (all but the forward 2-D ones it hands to YNNPACK) use one core per
device, so a single device leaves the other cores idle; one device per core, with the batch
sharded over them, uses them all (the loop already runs data-parallel). YNNPACK's kernels and the
matrix-product forms of `cnn_jax.layers.convolve` are multi-threaded within a device as well;
a device per core is still ahead with them (docs/performance.md), and where a step is not, a
launch trains on fewer (`cnn_jax.train.device_choice`).
Compiled programs are kept on disk, so a second launch of the same experiment skips its compiles.
XLA's CPU client allocates a step's buffers afresh at every step, and glibc serves each large one
from new pages that the kernel must fault in and zero: hundreds of thousands of page faults a
step on ResNet-18, a large share of its time in the kernel (docs/performance.md). Keeping freed
memory in the process for the next step removes them.
"""

import ctypes
import functools
import os
import platform
import sys

DEVICE_COUNT_FLAG = '--xla_force_host_platform_device_count'


# Compiles shorter than this are not written to the compilation cache (see `configure`).
CACHE_MIN_COMPILE_SECONDS = '0.1'

def cache_directory() -> str:
  """``$XDG_CACHE_HOME/cnn_jax/jax`` (``~/.cache/cnn_jax/jax``)."""
  root = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
  return os.path.join(root, 'cnn_jax', 'jax')


def tuning_file() -> str | None:
  """Where the ways each convolution measured fastest on this machine are kept
  (`cnn_jax.layers.tuning`): ``$CNN_JAX_TUNING_FILE``, empty for no tuning, else
  ``tuning.json`` beside the compilation cache."""
  path = os.environ.get('CNN_JAX_TUNING_FILE')
  if path is None:
    return os.path.join(os.path.dirname(cache_directory()), 'tuning.json')
  return path or None


def host_devices(cores: int, batch_sizes: list[int]) -> int:
  """The most CPU devices, at most one per core, that every batch size divides into."""
  return max(d for d in range(1, max(cores, 1) + 1) if all(b % d == 0 for b in batch_sizes))


# The vector and matrix extensions that decide which kernels XLA, YNNPACK and oneDNN can use.
CPU_EXTENSIONS = ('avx2', 'fma', 'avx512f', 'avx512bw', 'avx512_vnni', 'avx512_bf16',
                  'avx512_fp16', 'amx_tile', 'amx_bf16', 'amx_int8')


@functools.cache
def cpu() -> dict:
  """The CPU's model name and which of `CPU_EXTENSIONS` it has (Linux's /proc/cpuinfo; the
  platform's processor name elsewhere): CPU families differ in what the libraries exploit."""
  try:
    with open('/proc/cpuinfo', encoding='utf-8') as f:
      fields = dict(line.split(':', 1) for line in f.read().split('\n\n')[0].splitlines()
                    if ':' in line)
  except OSError:
    return {'model': platform.processor() or platform.machine(), 'extensions': []}
  fields = {k.strip(): v.strip() for k, v in fields.items()}
  flags = set(fields.get('flags', '').split())
  return {'model': fields.get('model name', platform.machine()),
          'extensions': [e for e in CPU_EXTENSIONS if e in flags]}


# mallopt(3) options; glibc reads the MALLOC_* variables and GLIBC_TUNABLES at start-up instead.
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
MALLOC_VARIABLES = ('GLIBC_TUNABLES', 'MALLOC_ARENA_MAX', 'MALLOC_MMAP_MAX_',
                    'MALLOC_TRIM_THRESHOLD_', 'MALLOC_MMAP_THRESHOLD_', 'MALLOC_TOP_PAD_')


def keep_freed_memory() -> bool:
  """Makes glibc's malloc give freed memory to the next allocation instead of back to the kernel:
  one arena (XLA's worker threads would otherwise get arenas whose large blocks are fresh
  mappings), no mappings for large blocks, no trimming. The process's memory then stays at its
  high-water mark, which fragmentation can take to 2-3x a step's own need. Left alone where the
  user tuned malloc through its environment variables, and where the C library is not glibc.
  Returns whether it applied."""
  if any(name in os.environ for name in MALLOC_VARIABLES):
    return False
  libc = ctypes.CDLL(None)
  if not hasattr(libc, 'gnu_get_libc_version'):
    return False
  # A threshold of -1 reaches glibc as the largest size_t: never trim.
  return all(libc.mallopt(option, value) == 1 for option, value in
             ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1)))


def launch_devices(config) -> int:
  """The CPU devices a launch of ``config`` makes on this machine: one per core at most, as many
  as its train and eval batch sizes split into."""
  return host_devices(os.cpu_count() or 1, [config.batch_size, config.eval_batch_size])


# Whether `configure` set this process's device count, the user having set none: only then may a
# launch train on fewer of its devices (`cnn_jax.train.device_choice`).
_devices_from_launch = False


def devices_from_launch() -> bool:
  """Whether this process's CPU device count is the launch's choice, not the user's."""
  return _devices_from_launch


def configure(config) -> None:
  """Sets what JAX reads before its first device starts; what the user set is kept: ``XLA_FLAGS``
  with its own ``--xla_force_host_platform_device_count``, ``JAX_COMPILATION_CACHE_DIR``
  (empty: no cache), and malloc's own variables (see `keep_freed_memory`)."""
  global _devices_from_launch  # pylint: disable=global-statement
  keep_freed_memory()  # before JAX's threads start: arenas are given out on a thread's first malloc
  xla_flags = os.environ.get('XLA_FLAGS', '')
  if DEVICE_COUNT_FLAG not in xla_flags:  # read when the CPU backend starts, not at import
    os.environ['XLA_FLAGS'] = f'{xla_flags} {DEVICE_COUNT_FLAG}={launch_devices(config)}'.strip()
    _devices_from_launch = True
  # Programs that compile faster than this recompile about as fast as they load from disk;
  # everything else is kept, the eval step's compile too.
  cache = {'JAX_COMPILATION_CACHE_DIR': cache_directory(),
           'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': CACHE_MIN_COMPILE_SECONDS}
  for name, value in cache.items():
    os.environ.setdefault(name, value)
  if 'jax' in sys.modules:  # a config file imported it: its options were read from the env already
    import jax  # pylint: disable=g-import-not-at-top
    jax.config.update('jax_compilation_cache_dir', os.environ['JAX_COMPILATION_CACHE_DIR'] or None)
    jax.config.update('jax_persistent_cache_min_compile_time_secs',
                      float(os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS']))
