"""The way each convolution of a train step is computed on a CPU, chosen by timing the candidates
on the machine that runs, the way XLA autotunes cuDNN's algorithms on GPUs.

`cpu_rules`' thresholds pick a way for each convolution from its shape; they were fitted on one
CPU, and another CPU family (wider vectors, AMX, other cache sizes) can rank the ways differently.
Where tuning is on (`conv_form.tuning(path, devices)`; the train step sets it from
``config.tune_convolutions``), `convolve` looks each convolution up in the file at ``path``; on a
miss it compiles every way of computing it (`cpu_rules.plans`), times each one's forward pass and
the gradients the step takes of it (a network's first layer has no input gradient: the way
fastest with one need not be fastest without) on every device of the step at once, each on its
share of the batch (the devices share the cores: a way that is fastest alone on all of them need
not be when each has its part), keeps the fastest in the file, and computes with it. Entries are
keyed by the machine (the CPU model, its cores, the devices, the JAX version) and the convolution
(one device's input shape, the kernel, strides, padding, dilation, dtype, the devices, the
gradients taken), so a later launch pays one lookup per convolution and no timing. The file also
keeps the devices each train step was timed fastest on (`cnn_jax.train.device_choice`).

A run tunes only as much as it can win back (`Budget`): a short run takes the thresholds' way for
the convolutions it has no time to tune, and stores nothing for them, so a longer run tunes them
later.

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
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from cnn_jax import arithmetic, host

# Each way runs until it has run this many times or for `_TIME_BUDGET_SECONDS`; its fastest run
# counts. The first run is one of them (a compiled program's first run is no slower than the next
# on a CPU): the timing and the compiles are the first launch's extra cost.
_RUNS = 3
_TIME_BUDGET_SECONDS = 0.5
# A way whose first run is this much slower than the fastest so far runs no more: the runs of one
# program differ by far less.
_BEHIND = 1.25

# A run spends on tuning (the convolutions', the devices') at most a tenth of the time it trains
# for: where the tuned way saves a tenth of the step, the tuning has paid for itself.
PAYBACK = 10

_lock = threading.RLock()  # `choose` holds it while it times, then stores
_loaded: dict[str, dict[str, dict]] = {}  # per file: its entries, as read or written


@functools.cache
def machine() -> str:
  """This process's machine, as the tuning file keys it."""
  cpu = host.cpu()
  return (f'{cpu["model"]}; {os.cpu_count()} cores; {jax.local_device_count()} '
          f'{jax.default_backend()} devices; jax {jax.__version__}')


_GRADIENTS = {(True, True): '', (False, True): ', no input gradient',
              (True, False): ', no kernel gradient'}


def signature(x_shape: Sequence[int], kernel_shape: Sequence[int], strides: Sequence[int],
              padding: Sequence[tuple[int, int]], dilation: Sequence[int], dtype,
              devices: int = 1, gradients: tuple[bool, bool] = (True, True)) -> str:
  on = f' on {devices} devices' if devices > 1 else ''
  return (f'x {list(x_shape)} kernel {list(kernel_shape)} strides {list(strides)} padding '
          f'{[list(p) for p in padding]} dilation {list(dilation)} {jnp.dtype(dtype).name}{on}'
          f'{_GRADIENTS[gradients]}')


def differentiated(x: jax.Array, kernel: jax.Array) -> tuple[bool, bool]:
  """Whether the gradient being traced is taken of ``x`` and of ``kernel``: (True, True) where
  none is seen (no gradient traced, or one recomputed under `jax.checkpoint`)."""
  seen = []

  @jax.custom_vjp
  def probe(x, kernel):
    return x, kernel

  def forward(x, kernel):
    seen.append((x.perturbed, kernel.perturbed))
    return (x.value, kernel.value), None

  def backward(_, cotangents):  # never called: the probe's outputs are not used
    return cotangents

  probe.defvjp(forward, backward, symbolic_zeros=True)
  probe(x, kernel)
  return seen[0] if seen else (True, True)


class Budget:
  """The timing one trace of a run's train step may do: while what the convolutions' timing took
  is at most a `PAYBACK`-th of the run's ``steps`` steps at the step time the convolutions met so
  far predict. That prediction is their fastest ways' time (the tuned ones' and those read from
  the file) scaled by the step's multiply-adds (``step_macs``: the model's forward pass on one
  device's share of the batch) over theirs, and never less than their time: it sharpens with
  each convolution met, so a long run tunes them all, and a short one stops after a few."""

  def __init__(self, steps: int, step_macs: int):
    self.steps, self.step_macs = steps, step_macs
    self.spent = 0.0  # seconds of timing so far
    self.seconds = self.macs = 0  # the convolutions met: their fastest ways, their multiply-adds
    self._told = False

  def met(self, seconds: float, macs: int) -> None:
    """Counts a convolution met: its fastest way's ``seconds``, its ``macs`` multiply-adds."""
    self.seconds += seconds
    self.macs += macs

  def step_seconds(self) -> float:
    """The step's time as the convolutions met so far predict it."""
    return self.seconds * max(1.0, self.step_macs / self.macs) if self.macs else 0.0

  def allows(self) -> bool:
    """Whether one more convolution may be timed (logging the first time one may not)."""
    if PAYBACK * self.spent <= self.steps * self.step_seconds():
      return True
    if not self._told:
      logging.info("Timed convolutions for %.1f s: this run's %d steps (about %s ms each) are "
                   'too short to repay timing the rest, which keep the built-in choice (a longer '
                   'run times them).', self.spent, self.steps, f'{1e3 * self.step_seconds():,.1f}')
      self._told = True
    return False


def _entries(path: str) -> dict[str, dict]:
  if path not in _loaded:
    try:
      with open(path, encoding='utf-8') as f:
        _loaded[path] = json.load(f)
    except (OSError, ValueError):  # none yet, or unreadable: tuned again, then rewritten
      _loaded[path] = {}
  return _loaded[path]


def known(path: str, key: str) -> dict | None:
  """This machine's entry ``key`` in the file at ``path``, if it has one."""
  return _entries(path).get(machine(), {}).get(key)


def store(path: str, key: str, choice: dict) -> None:
  """Adds one entry to the file, keeping what other processes wrote to it meanwhile."""
  with _lock:
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


def _seconds(compiled: Callable, arguments: tuple, fastest: float) -> float:
  """The fastest of a few runs of ``compiled`` on ``arguments``; one run only where it is far
  behind ``fastest``, the fastest other way's."""
  best, started = math.inf, time.perf_counter()
  for _ in range(_RUNS):
    start = time.perf_counter()
    jax.block_until_ready(compiled(*arguments))
    best = min(best, time.perf_counter() - start)
    if best > _BEHIND * fastest or time.perf_counter() - started > _TIME_BUDGET_SECONDS:
      break
  return best


def _time_each(ways: Sequence[str], compute: Callable, x_shape, kernel_shape, dtype,
               devices: int, gradients: tuple[bool, bool]) -> dict[str, float]:
  """Seconds of each way's forward pass and the ``gradients`` (of x, of the kernel) taken of it
  on inputs of these shapes, on ``devices`` devices at once (``x_shape``: each one's share)."""
  rng = np.random.default_rng(0)
  mesh = Mesh(np.array(jax.local_devices()[:devices]), ('batch',))
  x = jax.device_put(rng.standard_normal((devices * x_shape[0], *x_shape[1:])).astype(dtype),
                     NamedSharding(mesh, PartitionSpec('batch')))
  kernel = jax.device_put((rng.standard_normal(kernel_shape) / math.sqrt(
      math.prod(kernel_shape[:-1]))).astype(dtype), NamedSharding(mesh, PartitionSpec()))

  taken = tuple(i for i, wanted in enumerate(gradients) if wanted)

  def compiled(way):
    loss = lambda x, kernel: jnp.sum(jnp.square(compute(way, x, kernel))) / 2

    def run(x, kernel):  # each device's own kernel gradient: their sum is common to all ways
      return tuple(g[None] if i == 1 else g
                   for i, g in zip(taken, jax.grad(loss, argnums=taken)(x, kernel)))

    return jax.jit(jax.shard_map(
        run, mesh=mesh, in_specs=(PartitionSpec('batch'), PartitionSpec()),
        out_specs=PartitionSpec('batch'), check_vma=False)).lower(x, kernel).compile()

  # XLA compiles outside Python's lock: the ways compile side by side, then run one at a time.
  with concurrent.futures.ThreadPoolExecutor(os.cpu_count()) as pool:
    programs = list(pool.map(compiled, ways))
  seconds = {}
  for way, program in zip(ways, programs):
    seconds[way] = _seconds(program, (x, kernel), min(seconds.values(), default=math.inf))
  return seconds


def choose(path: str, x_shape: Sequence[int], kernel_shape: Sequence[int],
           strides: Sequence[int], padding: Sequence[tuple[int, int]], dilation: Sequence[int],
           dtype, ways: Sequence[str], compute: Callable[[str, jax.Array, jax.Array], jax.Array],
           devices: int = 1, gradients: tuple[bool, bool] = (True, True),
           budget: Budget | None = None) -> str | None:
  """The fastest of ``ways`` for this convolution (``x_shape``: one device's share of the batch,
  on each of ``devices`` devices at once; ``gradients``: whether the step takes those of x and of
  the kernel) on this machine: from the file at ``path``, or timed now (``compute(way, x,
  kernel)`` computes it) and added to the file; None where it is not in the file and ``budget``
  (None: no bound) allows no more timing."""
  devices = min(devices, jax.local_device_count())
  key = signature(x_shape, kernel_shape, strides, padding, dilation, dtype, devices, gradients)
  window = kernel_shape[:-2]
  macs = x_shape[0] * arithmetic.conv_macs(arithmetic.conv_output_shape(
      x_shape[1:-1], window, strides, padding, dilation), window, *kernel_shape[-2:])
  with _lock:
    entry = known(path, key)
    if entry and entry['choice'] in ways:
      if budget is not None:
        budget.met(entry['ms'][entry['choice']] / 1e3, macs)
      return entry['choice']
    if budget is not None and not budget.allows():
      return None
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # outside the trace that met it
      seconds = pool.submit(_time_each, ways, compute, tuple(x_shape), tuple(kernel_shape),
                            dtype, devices, gradients).result()
    choice = min(seconds, key=seconds.get)
    store(path, key, {'choice': choice, 'ms': {w: round(1e3 * s, 3) for w, s in seconds.items()}})
    if budget is not None:
      budget.spent += time.perf_counter() - start
      budget.met(seconds[choice], macs)
    return choice
