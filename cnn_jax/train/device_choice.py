"""The devices a CPU launch trains on: one per core, or fewer where its train step runs faster on
fewer, found by timing the step once per machine and step and kept in the tuning file.

A launch makes a CPU device per core (`cnn_jax.host`), since XLA's own convolutions and YNNPACK's
run on one core per device. The matrix products use every core from one device, though, and a
step made mostly of them can lose more to splitting the batch and to the collectives than it
gains; which way a model goes differs between CPU families (docs/performance.md). So, where the
convolutions are tuned, a launch's first step times the step on every device, then on half as
many, halving while that is faster, and trains on the fastest. The timing is done on this
process's devices, in the process that trains: it measures the mesh the run then uses.
"""

import json
import math
import time
from collections.abc import Callable, Sequence

import jax
import ml_collections
import numpy as np
from absl import logging
from jax.sharding import Mesh

from cnn_jax import console, host
from cnn_jax.data import augment
from cnn_jax.layers import tuning
from cnn_jax.train import parallel, steps

# The two counts compared run in alternating rounds (the machine's speed drifts), each round
# stepping for at least this long; a count's fastest round counts.
_ROUNDS = 3
_ROUND_SECONDS = 0.5


def applies(config: ml_collections.ConfigDict) -> bool:
  """Whether this launch chooses its devices: tuning on, a CPU process alone, with more than one
  device and as many as the launch made (a device count the user set is kept)."""
  return (steps.tuning_file(config) is not None and jax.default_backend() == 'cpu'
          and jax.local_device_count() > 1 and host.devices_from_launch())


def counts(devices: int) -> list[int]:
  """The device counts a search may time, in order: all, then each time the largest divisor of
  ``devices`` at most half the last (a batch that splits over all splits over those)."""
  found = [devices]
  while found[-1] > 1:
    found.append(max(d for d in range(1, found[-1] // 2 + 1) if devices % d == 0))
  return found


def key(config: ml_collections.ConfigDict, example_shape: Sequence[int],
        label_shape: Sequence[int], num_classes: int) -> str:
  """The tuning file's key of a train step: what its speed depends on, in the config's terms."""
  step = {'model': config.model.name, 'kwargs': config.model.kwargs.to_dict(),
          'classes': num_classes, 'example': list(example_shape), 'label': list(label_shape),
          'batch': config.batch_size, 'grad_accum_steps': config.grad_accum_steps,
          'compute_dtype': config.compute_dtype, 'conv_impl': config.conv_impl,
          'mode': config.parallel.mode, 'optimizer': config.optim.name,
          'mixing': [op.name for op in augment.plan(config.data.augment.ops)['step']],
          'ema': bool(config.ema_decay), 'head_only': config.init.head_only}
  return f'train step {json.dumps(step, sort_keys=True, default=str)}'


class _Trial:
  """The train step compiled for ``devices``, run on a state and a batch of its own."""

  def __init__(self, devices: Sequence, make_step: Callable[[Mesh], Callable],
               init: Callable, batch: dict):
    start = time.perf_counter()
    self.mesh = parallel.make_mesh(devices)
    self.step = make_step(self.mesh)
    self.state = jax.jit(init, out_shardings=parallel.replicated(self.mesh))()
    self.batch = jax.device_put(batch, parallel.batch_sharded(self.mesh))
    self.seconds = math.inf
    self._run()  # compiles; a first run also pays for its fresh memory
    self.setup_seconds = time.perf_counter() - start

  def _run(self) -> None:
    self.state, logs = self.step(self.state, self.batch)
    jax.block_until_ready((self.state, logs))

  def time_round(self, seconds: float = _ROUND_SECONDS) -> None:
    """Steps for at least ``seconds`` (one step at least); keeps the fastest round's mean."""
    runs, start = 0, time.perf_counter()
    while not runs or time.perf_counter() - start < seconds:
      self._run()
      runs += 1
    self.seconds = min(self.seconds, (time.perf_counter() - start) / runs)


def choose(config: ml_collections.ConfigDict, mesh: Mesh, make_step: Callable[[Mesh], Callable],
           init: Callable, example_shape: Sequence[int], label_shape: Sequence[int],
           num_classes: int, steps_left: int) -> tuple[Mesh, Callable | None]:
  """The mesh of ``mesh``'s first devices on which the train step runs fastest, and that step
  compiled (None where the tuning file had the choice and nothing was compiled).

  ``make_step(mesh)`` is the jitted train step for a mesh, ``init()`` a fresh state;
  ``steps_left`` the steps the run has left to train. A run too short to pay for a search (its
  steps take less than `tuning.PAYBACK` times what trying one more count costs: a compile and the
  rounds) keeps ``mesh`` and stores nothing.
  """
  path, devices = steps.tuning_file(config), list(mesh.devices.flat)
  step_key = key(config, example_shape, label_shape, num_classes)
  entry = tuning.known(path, step_key)
  if entry and entry['devices'] in counts(len(devices)):
    logging.info('Training on %d of %d devices: the train step timed fastest on this machine '
                 '(%s).', entry['devices'], len(devices), console.shown(path))
    return parallel.make_mesh(devices[:entry['devices']]), None
  rng = np.random.default_rng(0)
  batch = {'image': rng.standard_normal((config.batch_size, *example_shape), np.float32),
           'label': np.zeros((config.batch_size, *label_shape), np.int32)}
  best = _Trial(devices, make_step, init, batch)  # the run's own compile, needed anyway
  best.time_round(0)
  trying = best.setup_seconds + 2 * _ROUNDS * max(_ROUND_SECONDS, best.seconds)
  if steps_left * best.seconds < tuning.PAYBACK * trying:
    return best.mesh, best.step
  logging.info('Timing the train step on fewer devices than %d, once on this machine (kept in '
               '%s).', len(devices), console.shown(path))
  timed = [best]
  for count in counts(len(devices))[1:]:
    trial = _Trial(devices[:count], make_step, init, batch)
    timed.append(trial)
    for _ in range(_ROUNDS):
      best.time_round()
      trial.time_round()
    if trial.seconds >= best.seconds:
      break
    best = trial
  ms = {str(t.mesh.size): round(1e3 * t.seconds, 3) for t in timed}
  tuning.store(path, step_key, {'devices': best.mesh.size, 'ms': ms})
  logging.info('Train step: %s; training on %d device(s).',
               ', '.join(f'{v:.1f} ms on {k} device(s)' for k, v in ms.items()), best.mesh.size)
  return best.mesh, best.step
