"""The way each convolution of a train step is computed on a CPU, chosen by timing the candidates
on the machine that runs, the way XLA autotunes cuDNN's algorithms on GPUs.

`cpu_rules`' thresholds pick a way for each convolution from its shape; they were fitted on one
CPU, and another CPU family (wider vectors, AMX, other cache sizes) can rank the ways differently.
Where tuning is on (`conv_form.tuning(path)`; the train step sets it from
``config.tune_convolutions``), `convolve` looks each convolution up in the file at ``path``; on a
miss it compiles every way of computing it (`cpu_rules.plans`), times each one's forward and
backward pass on one device's share of the batch, keeps the fastest in the file, and computes
with it. Entries are keyed by the machine (the CPU model, its cores, the devices, the JAX version)
and the convolution (one device's input shape, the kernel, strides, padding, dilation, dtype), so
a later launch pays one lookup per convolution and no timing.

The timing runs in a thread of its own: the convolution is met while the step is being traced,
and a thread starts outside that trace, so its programs run.
"""

import concurrent.futures
import functools
import json
import math
import os
import threading
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from cnn_jax import host

# Each way is run once to warm it, then timed until it has run this many times or for
# `_TIME_BUDGET_SECONDS`; its fastest run counts.
_RUNS = 3
_TIME_BUDGET_SECONDS = 0.5

_lock = threading.Lock()
_loaded: dict[str, dict[str, dict]] = {}  # per file: its entries, as read or written


@functools.cache
def machine() -> str:
  """This process's machine, as the tuning file keys it."""
  cpu = host.cpu()
  return (f'{cpu["model"]}; {os.cpu_count()} cores; {jax.local_device_count()} '
          f'{jax.default_backend()} devices; jax {jax.__version__}')


def signature(x_shape: Sequence[int], kernel_shape: Sequence[int], strides: Sequence[int],
              padding: Sequence[tuple[int, int]], dilation: Sequence[int], dtype) -> str:
  return (f'x {list(x_shape)} kernel {list(kernel_shape)} strides {list(strides)} padding '
          f'{[list(p) for p in padding]} dilation {list(dilation)} {jnp.dtype(dtype).name}')


def _entries(path: str) -> dict[str, dict]:
  if path not in _loaded:
    try:
      with open(path, encoding='utf-8') as f:
        _loaded[path] = json.load(f)
    except (OSError, ValueError):  # none yet, or unreadable: tuned again, then rewritten
      _loaded[path] = {}
  return _loaded[path]


def _store(path: str, key: str, choice: dict) -> None:
  """Adds one entry to the file, keeping what other processes wrote to it meanwhile."""
  entries = _entries(path)
  entries.setdefault(machine(), {})[key] = choice
  try:
    with open(path, encoding='utf-8') as f:
      on_disk = json.load(f)
  except (OSError, ValueError):
    on_disk = {}
  for name, tuned in on_disk.items():
    entries[name] = {**tuned, **entries.get(name, {})}
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  temporary = f'{path}.{os.getpid()}.tmp'
  with open(temporary, 'w', encoding='utf-8') as f:
    json.dump(entries, f, indent=1, sort_keys=True)
  os.replace(temporary, path)


def _seconds(function: Callable, arguments: tuple) -> float:
  """The fastest of a few runs of ``function`` (jitted here) on ``arguments``."""
  compiled = jax.jit(function).lower(*arguments).compile()
  jax.block_until_ready(compiled(*arguments))
  best, started = math.inf, time.perf_counter()
  for _ in range(_RUNS):
    start = time.perf_counter()
    jax.block_until_ready(compiled(*arguments))
    best = min(best, time.perf_counter() - start)
    if start - started > _TIME_BUDGET_SECONDS:
      break
  return best


def _time_each(ways: Sequence[str], compute: Callable, x_shape, kernel_shape, dtype
               ) -> dict[str, float]:
  """Seconds of each way's forward and backward pass, on inputs of these shapes."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal(x_shape), dtype)
  kernel = jnp.asarray(rng.standard_normal(kernel_shape) / math.sqrt(
      math.prod(kernel_shape[:-1])), dtype)
  seconds = {}
  for way in ways:
    loss = lambda x, kernel, way=way: jnp.sum(jnp.square(compute(way, x, kernel))) / 2
    seconds[way] = _seconds(jax.grad(loss, argnums=(0, 1)), (x, kernel))
  return seconds


def choose(path: str, x_shape: Sequence[int], kernel_shape: Sequence[int],
           strides: Sequence[int], padding: Sequence[tuple[int, int]], dilation: Sequence[int],
           dtype, ways: Sequence[str], compute: Callable[[str, jax.Array, jax.Array], jax.Array]
           ) -> str:
  """The fastest of ``ways`` for this convolution (``x_shape``: one device's share of the batch)
  on this machine: from the file at ``path``, or timed now (``compute(way, x, kernel)`` computes
  it) and added to the file."""
  key = signature(x_shape, kernel_shape, strides, padding, dilation, dtype)
  with _lock:
    known = _entries(path).get(machine(), {}).get(key)
    if known and known['choice'] in ways:
      return known['choice']
    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # outside the trace that met it
      seconds = pool.submit(_time_each, ways, compute, tuple(x_shape), tuple(kernel_shape),
                            dtype).result()
    choice = min(seconds, key=seconds.get)
    _store(path, key, {'choice': choice, 'ms': {w: round(1e3 * s, 3) for w, s in seconds.items()}})
    return choice
