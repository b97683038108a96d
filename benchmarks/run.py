"""Throughput benchmarks with JSON output; ratios are against a reference measured in the same run.

  ./launch.sh bench                          # all benchmarks, JSON to stdout
  ./launch.sh bench --out=bench.json --devices=2 --steps=10

* ``train_step``: examples/s and first-call (compile) seconds of the jitted train step, per model,
  for one device (the reference) and for ``--devices`` forced host devices in the 'jit' and 'pmap'
  modes. Each configuration runs in its own process, since the device count is fixed at start-up.
* ``input_pipeline``: images/s of `pipeline.train_batches` (shuffle, augment, normalise, shard)
  against raw random-access reads of the same TFDS source (the reference).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # experiments/ is imported from the checkout

# pylint: disable=wrong-import-position
import jax
import numpy as np
import psutil

from cnn_jax.data import pipeline, sources
from cnn_jax.train import loop, optim, parallel
from cnn_jax.train import steps as train_steps
from experiments import base, default
# name: (registry name, model kwargs, input shape, batch size)
MODELS = {
    'simple_cnn': ('simple_cnn', {'widths': (32, 64)}, (8, 8, 1), 128),
    'lenet5': ('lenet5', {}, (32, 32, 1), 128),
    'resnet18_cifar': ('resnet18_cifar', {}, (32, 32, 3), 32),
}


def train_step_worker(name: str, mode: str, steps: int) -> dict:
  """Runs in a child process whose device count was set through XLA_FLAGS at its start."""

  registered, kwargs, shape, batch_size = MODELS[name]
  config = base.get_config()
  config.model.name, config.parallel.mode, config.batch_size = registered, mode, batch_size
  config.model.kwargs.update(kwargs)
  mesh = parallel.make_mesh()
  schedule = optim.learning_rate(config.optim, 100, 1000)
  tx = optim.create(config.optim, schedule)
  model = loop.build_model(config, 10)
  state = jax.jit(loop.state_initializer(model, tx, shape, config),
                  out_shardings=parallel.replicated(mesh))()
  step = train_steps.make_train_step(model, tx, schedule, config, mesh)
  rng = np.random.default_rng(0)
  batch = jax.device_put({'image': rng.standard_normal((batch_size, *shape), np.float32),
                          'label': rng.integers(0, 10, batch_size).astype(np.int32)},
                         parallel.batch_sharded(mesh))
  start = time.perf_counter()
  state, logs = step(state, batch)
  jax.block_until_ready(logs)
  first_call = time.perf_counter() - start
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    state, logs = step(state, batch)
    jax.block_until_ready(logs)  # one step at a time: also avoids the CPU collective trap
    times.append(time.perf_counter() - start)
  median = statistics.median(times)
  return {'model': name, 'mode': mode, 'devices': jax.device_count(), 'batch_size': batch_size,
          'first_call_s': round(first_call, 3), 'step_s_median': round(median, 5),
          'examples_per_s': round(batch_size / median, 1)}


def train_step_benchmarks(devices: int, steps: int) -> list[dict]:
  rows = []
  for name in MODELS:
    runs = [('jit', 1), ('jit', devices), ('pmap', devices)]
    results = []
    for mode, count in runs:
      env = dict(os.environ, XLA_FLAGS=f'--xla_force_host_platform_device_count={count}')
      out = subprocess.run([sys.executable, __file__, '--worker', name, mode, str(steps)],
                           cwd=REPO, env=env, capture_output=True, text=True, check=True)
      results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    reference = results[0]['examples_per_s']
    for result in results:
      result['speedup_vs_one_device'] = round(result['examples_per_s'] / reference, 3)
    rows.extend(results)
  return rows


def input_pipeline_benchmark(batches: int) -> dict:

  config = default.get_config()
  config.batch_size = 128
  with tempfile.TemporaryDirectory() as data_dir:
    source = sources.load('digits', 'train', data_dir)
    start = time.perf_counter()
    raw = 0
    while raw < batches * config.batch_size:
      np.stack([source.records[i % len(source)]['image'] for i in range(raw, raw + 128)])
      raw += 128
    raw_rate = raw / (time.perf_counter() - start)
    stream = pipeline.train_batches(source, config, parallel.make_mesh())
    jax.block_until_ready(next(stream))  # threads started, first batch ready
    start = time.perf_counter()
    for _ in range(batches):
      jax.block_until_ready(next(stream))
    rate = batches * config.batch_size / (time.perf_counter() - start)
  return {'dataset': 'digits', 'batch_size': config.batch_size, 'raw_read_images_per_s': round(raw_rate),
          'pipeline_images_per_s': round(rate), 'pipeline_vs_raw_read': round(rate / raw_rate, 3)}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--devices', type=int, default=2, help='forced host devices to compare')
  parser.add_argument('--steps', type=int, default=5, help='timed train steps per configuration')
  parser.add_argument('--batches', type=int, default=50, help='timed input-pipeline batches')
  parser.add_argument('--out', help='also write the JSON here')
  parser.add_argument('--worker', nargs=3, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    name, mode, steps = args.worker
    print(json.dumps(train_step_worker(name, mode, int(steps))))
    return
  report = {
      'machine': {'backend': jax.default_backend(), 'cpu_count': psutil.cpu_count(),
                  'memory_gib': round(psutil.virtual_memory().total / 2**30, 1),
                  'jax': jax.__version__},
      'train_step': train_step_benchmarks(args.devices, args.steps),
      'input_pipeline': input_pipeline_benchmark(args.batches),
  }
  text = json.dumps(report, indent=2)
  print(text)
  if args.out:
    with open(args.out, 'w', encoding='utf-8') as f:
      f.write(text + '\n')


if __name__ == '__main__':
  main()
