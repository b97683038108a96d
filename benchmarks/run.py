"""Throughput benchmarks with JSON output; every ratio is against a reference measured in the same
run.

  ./launch.sh bench                                # everything, JSON to stdout
  ./launch.sh bench --only=train_step --rounds=3 --out=bench.json
  ./launch.sh bench --tables                       # the docs' tables from benchmarks/results/

* ``train_step``: cnn_jax's own jitted train step (examples/s, compile seconds, achieved FLOP/s
  (the model's own count of multiply-adds) and its fraction of the same run's matmul peak, peak
  memory) against a PyTorch eager twin of each model with the same parameter count (NCHW and
  channels_last), at batch 128, in float32 and in bfloat16 (PyTorch's autocast). Every
  configuration runs in its own process (device counts and thread pools are fixed at start-up),
  all of them once per round, in turn; a configuration's figure is its best round. ``ratio`` is
  cnn_jax's best over PyTorch's best at the same precision.
* ``input_pipeline``: for every shipped experiment whose data is prepared, the images/s that
  `pipeline.train_batches` delivers against the images/s its train step consumes, both on the
  devices a launch of the experiment makes.
  With it, ``jpeg_pipeline`` (`benchmarks/jpeg_pipeline.py`): ImageNet-class JPEG preprocessing
  in images per CPU-second and per second, cnn_jax's pipeline with 0, 1, 2, ... worker processes
  against torchvision's DataLoader and tf.data, over one synthetic set of JPEGs made here.
* ``max_pool``: max pooling forward and backward on one CPU device, its gradient by cnn_jax's
  rule for CPUs (the 'mixed' form) against XLA's own (``select_and_scatter``), alternating.
* ``compile_cache``: seconds from launch to the end of the first step of a one-step run (and to
  the end of the run), with an empty persistent compilation cache and then with the cache the
  first launch left; one such pair per round, the medians reported.
"""

import argparse
import datetime
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks import jpeg_pipeline, tables  # pylint: disable=g-import-not-at-top,wrong-import-position
from cnn_jax import host  # pylint: disable=g-import-not-at-top,wrong-import-position

# name: (registered model, kwargs, one example's shape, classes, batch, GPU only)
MODELS = {
    'resnet18_cifar': ('resnet18_cifar', {}, (32, 32, 3), 10, 128, False),
    'mobilenet_v1_x0.5': ('mobilenet_v1', {'width_multiplier': 0.5}, (64, 64, 3), 10, 128,
                          False),
    'lenet5': ('lenet5', {}, (32, 32, 1), 10, 128, False),
    'resnet50': ('resnet50', {}, (224, 224, 3), 1000, 128, True),
}
# (input, window, stride, padding): a 2x2 pool, one whose input does not tile, ResNet's stem pool,
# Inception's pool branch, and ResNet-50's stem pool at batch 32.
POOLS = (((64, 32, 32, 64), 2, 2, 'VALID'), ((64, 31, 31, 64), 2, 2, 'SAME'),
         ((64, 32, 32, 64), 3, 2, 'SAME'), ((64, 32, 32, 64), 3, 1, 'SAME'),
         ((32, 112, 112, 64), 3, 2, 'SAME'))
EXPERIMENTS = ('default', 'mnist1d_cnn', 'mnist1d_resnet', 'mnist1d_wavenet', 'motifs_deepbind',
               'shapes_unet', 'shapes_fcn', 'shapes_segnet', 'shapes_dilated', 'mnist_lenet5',
               'cifar10_resnet18', 'imagenet_resnet50')


def emit(report: dict, out: str | None) -> None:
  """The report as JSON on stdout and, if ``out`` is given, in that file."""
  text = json.dumps(report, indent=2)
  print(text)
  if out:
    with open(out, 'w', encoding='utf-8') as f:
      f.write(text + '\n')


def _peak_memory_bytes(device=None) -> int:
  if device is not None and device.platform != 'cpu':
    return int(device.memory_stats().get('peak_bytes_in_use', 0))
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _resident_bytes() -> int:
  """The process's memory now (Linux), or its peak where there is no /proc."""
  try:
    with open('/proc/self/statm', encoding='ascii') as statm:
      return int(statm.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')
  except OSError:
    return _peak_memory_bytes()


def _steady_step_s(step, steps: int, quiet: int = 3, most: int = 15) -> float:
  """The median seconds of ``steps`` calls of ``step``, timed once ``quiet`` calls in a row grew
  the process by less than 4 MiB (at most ``most`` warm-up calls). A step that grows it waits for
  the kernel to hand out and zero fresh pages: on this VM about 2 s of ResNet-18's 4 s step, in
  2-4 of its first 6 steps (growth can pause for two steps and resume), which is start-up, not
  throughput."""
  step()
  still = 0
  for _ in range(most):
    before = _resident_bytes()
    step()
    still = still + 1 if _resident_bytes() - before < 2**22 else 0
    if still == quiet:
      break
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    step()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def _train_step_parts(config, shape: tuple, classes: int):
  """The model of a benchmark's train step, its fresh state's initializer and its step for a
  mesh (`loop`'s, with a fixed schedule)."""
  from cnn_jax.train import loop, optim  # pylint: disable=g-import-not-at-top
  from cnn_jax.train import steps as train_steps  # pylint: disable=g-import-not-at-top

  schedule = optim.learning_rate(config.optim, 100, 1000)
  tx = optim.create(config.optim, schedule)
  model = loop.build_model(config, classes)
  return (model, loop.state_initializer(model, tx, shape, config),
          lambda mesh: train_steps.make_train_step(model, tx, schedule, config, mesh))


def _run_train_step(config, mesh, shape: tuple, classes: int, batch: dict, steps: int):
  """cnn_jax's own train step for ``config``, compiled for ``batch`` in the config's convolution
  form, warmed up, then timed one step at a time (which also avoids the CPU collective
  trap). Returns (model, state, compiled step, compile seconds, median step seconds)."""
  import jax  # pylint: disable=g-import-not-at-top
  from cnn_jax.layers.convolve import use  # pylint: disable=g-import-not-at-top
  from cnn_jax.train import parallel  # pylint: disable=g-import-not-at-top

  model, init, make_step = _train_step_parts(config, shape, classes)
  with use(config.conv_impl):
    state = jax.jit(init, out_shardings=parallel.replicated(mesh))()
    step = make_step(mesh)
    start = time.perf_counter()
    compiled = step.lower(state, batch).compile()
    compile_s = time.perf_counter() - start

  def step():
    nonlocal state
    state, logs = compiled(state, batch)
    jax.block_until_ready(logs)

  step_s = _steady_step_s(step, steps)  # before `state` is read: the steps donate it
  return model, state, compiled, compile_s, step_s


def jax_worker(name: str, devices: int, conv_impl: str, dtype: str, tune: str, steps: int) -> dict:
  """cnn_jax's train step, in a process whose host device count was set at its start; ``tune``:
  'tuned' to choose each convolution's way by timing (the run's tuning file, empty at its first
  round), 'thresholds' for the CPU rules' thresholds, 'chosen' as 'tuned' on the devices a
  launch chooses by timing (`device_choice`; its compile is then the search's, which compiles
  the step on each count it times and keeps the fastest, where it searched)."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from cnn_jax import arithmetic  # pylint: disable=g-import-not-at-top
  from cnn_jax.layers.convolve import use  # pylint: disable=g-import-not-at-top
  from cnn_jax.train import device_choice, parallel  # pylint: disable=g-import-not-at-top
  from experiments import base  # pylint: disable=g-import-not-at-top

  registered, kwargs, shape, classes, batch_size, _ = MODELS[name]
  config = base.get_config()
  config.model.name, config.batch_size, config.compute_dtype = registered, batch_size, dtype
  config.model.kwargs.update(kwargs)
  config.conv_impl = conv_impl
  config.tune_convolutions = tune != 'thresholds'
  mesh = parallel.make_mesh(jax.devices()[:devices])
  search_s, searched = 0.0, None
  if tune == 'chosen':
    _, init, make_step = _train_step_parts(config, shape, classes)
    start = time.perf_counter()
    with use(conv_impl):
      mesh, searched = device_choice.choose(config, mesh, make_step, init, shape, (), classes,
                                            10**9)
    search_s = time.perf_counter() - start
  rng = np.random.default_rng(0)
  batch = jax.device_put({'image': rng.standard_normal((batch_size, *shape), np.float32),
                          'label': rng.integers(0, classes, batch_size).astype(np.int32)},
                         parallel.batch_sharded(mesh))
  model, state, compiled, compile_s, step_s = _run_train_step(config, mesh, shape, classes, batch,
                                                              steps)
  # A launch that searched trains with the program the search compiled; one that read the
  # choice from the file compiles it.
  compile_s = search_s if searched else search_s + compile_s
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  # The rate is of the model's own count: a training step is three forward passes' worth of
  # multiply-adds, two FLOPs each. XLA's count (of one device's program, which every device runs)
  # sees neither into library calls (cuDNN) nor past a loop's first trip (the CPU kernel
  # gradient's loop over batch chunks); it is kept beside it.
  xla_flops = float(cost.get('flops', 0.0)) * mesh.size
  model_flops = 6 * batch_size * arithmetic.summarize(model, (1, *shape), print_fn=None).total_macs
  chosen = {'chosen_from': devices} if tune == 'chosen' else {}
  return {'framework': 'cnn_jax', 'devices': mesh.size, **chosen, 'conv_impl': conv_impl,
          'dtype': dtype, 'tuned': config.tune_convolutions,
          'params': sum(x.size for x in jax.tree_util.tree_leaves(state.params)),
          'compile_s': round(compile_s, 2), 'step_s': round(step_s, 5),
          'examples_per_s': round(batch_size / step_s, 1), 'xla_flops_per_step': xla_flops,
          'model_flops_per_step': model_flops,
          'achieved_gflops': round(model_flops / step_s / 1e9, 1),
          'peak_memory_mib': round(_peak_memory_bytes(jax.devices()[0]) / 2**20)}


def torch_worker(name: str, layout: str, amp: str, steps: int) -> dict:
  """The PyTorch eager twin's train step."""
  import torch  # pylint: disable=g-import-not-at-top
  from benchmarks import torch_twins  # pylint: disable=g-import-not-at-top

  registered, kwargs, shape, classes, batch_size, _ = MODELS[name]
  cuda = torch.cuda.is_available()
  device = torch.device('cuda' if cuda else 'cpu')
  torch.set_num_threads(os.cpu_count())
  model = torch_twins.TWINS[registered](classes, **kwargs).to(device)
  memory_format = torch.channels_last if layout == 'channels_last' else torch.contiguous_format
  model = model.to(memory_format=memory_format)
  optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
  generator = torch.Generator().manual_seed(0)
  images = torch.randn(batch_size, shape[-1], *shape[:-1], generator=generator).to(
      device, memory_format=memory_format)
  labels = torch.randint(0, classes, (batch_size,), generator=generator).to(device)

  def step():
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp == 'bfloat16'):
      loss = torch.nn.functional.cross_entropy(model(images), labels)
    loss.backward()
    optimizer.step()
    if cuda:
      torch.cuda.synchronize()

  step_s = _steady_step_s(step, steps)
  memory = torch.cuda.max_memory_allocated() if cuda else _peak_memory_bytes()
  return {'framework': 'torch', 'layout': layout, 'dtype': amp, 'threads': torch.get_num_threads(),
          'params': torch_twins.parameter_count(model), 'step_s': round(step_s, 5),
          'examples_per_s': round(batch_size / step_s, 1),
          'peak_memory_mib': round(memory / 2**20)}


def max_pool_worker() -> list[dict]:
  """Forward and backward of each of `POOLS` under 'xla' and 'mixed' (a tanh after the pool keeps
  the backward pass from folding into a constant)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from cnn_jax import layers as L  # pylint: disable=g-import-not-at-top
  from cnn_jax.layers import convolve  # pylint: disable=g-import-not-at-top

  rows = []
  for shape, window, stride, padding in POOLS:
    x = jax.random.normal(jax.random.key(0), shape)
    ms = {}
    for impl in ('xla', 'mixed'):
      with convolve.use(impl):  # the form is read when the step is traced, here
        grad = jax.jit(jax.grad(lambda v: jnp.tanh(L.max_pool(v, window, stride, padding)).sum()))
        jax.block_until_ready(grad(x))
      ms[impl] = 1e3 * _steady_step_s(lambda g=grad, x=x: jax.block_until_ready(g(x)), 10)
    rows.append({'input': list(shape), 'window': window, 'stride': stride, 'padding': padding,
                 'xla_ms': round(ms['xla'], 2), 'mixed_ms': round(ms['mixed'], 2),
                 'speedup': round(ms['xla'] / ms['mixed'], 1)})
  return rows


def peak_worker() -> dict:
  """The matrix-product rate this machine reaches through XLA: the ceiling for FLOP/s."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  size = 2048 if jax.default_backend() == 'cpu' else 8192
  results = {}
  for dtype in ('float32', 'bfloat16'):
    a = jax.random.normal(jax.random.key(0), (size, size), dtype)
    product = jax.jit(lambda a, b: a @ b)
    jax.block_until_ready(product(a, a))
    times = []
    for _ in range(10):
      start = time.perf_counter()
      jax.block_until_ready(product(a, a))
      times.append(time.perf_counter() - start)
    results[dtype] = round(2 * size**3 / statistics.median(times) / 1e9, 1)
  return {'matmul_size': size, 'matmul_gflops': results}


def _spawn(args: list[str], devices: int = 1) -> dict:
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [REPO, os.environ.get('PYTHONPATH')])))
  env['XLA_FLAGS'] = (env.get('XLA_FLAGS', '') +
                      f' --xla_force_host_platform_device_count={devices}').strip()
  out = subprocess.run([sys.executable, __file__, '--worker', *args], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=1800)
  if out.returncode:
    raise RuntimeError(f'worker {args} failed:\n{out.stderr[-3000:]}')
  return json.loads(out.stdout.strip().splitlines()[-1])


NATIVE_BFLOAT16 = {'avx512_bf16', 'amx_bf16'}


def _configurations(name: str, gpu: bool, devices: int) -> list[tuple[list[str], int]]:
  """(worker arguments, host devices) of every configuration of one model."""
  if gpu:
    jax_runs = [(['jax', name, '1', 'auto', dtype, 'thresholds'], 1)
                for dtype in ('float32', 'bfloat16')]
    torch_runs = [(['torch', name, 'nchw', 'float32'], 1),
                  (['torch', name, 'channels_last', 'float32'], 1),
                  (['torch', name, 'channels_last', 'bfloat16'], 1)]
  else:
    # The launch's default first, so that its first round meets an empty tuning file: a device
    # per core made, the devices trained on and each convolution's way timed here.
    jax_runs = [(['jax', name, str(devices), 'auto', 'float32', 'chosen'], devices),
                (['jax', name, '1', 'xla', 'float32', 'thresholds'], 1),
                (['jax', name, '1', 'auto', 'float32', 'thresholds'], 1),
                (['jax', name, '1', 'auto', 'float32', 'tuned'], 1),
                (['jax', name, str(devices), 'auto', 'float32', 'thresholds'], devices),
                (['jax', name, str(devices), 'auto', 'float32', 'tuned'], devices)]
    torch_runs = [(['torch', name, 'nchw', 'float32'], 1),
                  (['torch', name, 'channels_last', 'float32'], 1)]
    # bfloat16 against PyTorch's autocast, where the CPU multiplies bfloat16 itself (elsewhere
    # oneDNN emulates it, far too slowly to time: docs/performance.md). Its convolutions are
    # float32's (converted first), so the float32 runs' tuning would make a tuned run's first
    # compile a later launch's.
    if NATIVE_BFLOAT16 & set(host.cpu()['extensions']):
      jax_runs += [(['jax', name, '1', 'auto', 'bfloat16', 'thresholds'], 1),
                   (['jax', name, str(devices), 'auto', 'bfloat16', 'thresholds'], devices)]
      torch_runs += [(['torch', name, 'nchw', 'bfloat16'], 1),
                     (['torch', name, 'channels_last', 'bfloat16'], 1)]
  return jax_runs + torch_runs


def train_step_benchmarks(models: list[str], rounds: int, steps: int, devices: int, gpu: bool,
                          peak: dict) -> list[dict]:
  rows = []
  for name in models:
    configurations = _configurations(name, gpu, devices)
    best: dict[int, dict] = {}
    compiles: dict[int, list[float]] = {}
    for _ in range(rounds):  # every configuration once per round, in turn
      for index, (args, count) in enumerate(configurations):
        result = _spawn([*args, str(steps)], count)
        compiles.setdefault(index, []).append(result.get('compile_s'))
        if index not in best or result['examples_per_s'] > best[index]['examples_per_s']:
          best[index] = result
    results = [best[i] for i in range(len(configurations))]
    for index, result in enumerate(results):
      if result['framework'] == 'cnn_jax':
        # A tuned configuration times its convolutions at the first launch (an empty file);
        # the last round's is a later launch's.
        result['first_compile_s'], result['compile_s'] = compiles[index][0], compiles[index][-1]
    counts = {r['params'] for r in results}
    if len(counts) != 1:
      raise RuntimeError(f'{name}: the twins differ in parameter count: {results}')
    ratios = {}
    for dtype in sorted({r['dtype'] for r in results}):
      ours = [r for r in results if r['framework'] == 'cnn_jax' and r['dtype'] == dtype]
      theirs = [r for r in results if r['framework'] == 'torch' and r['dtype'] == dtype]
      if ours and theirs:
        ratios[dtype] = round(max(r['examples_per_s'] for r in ours) /
                              max(r['examples_per_s'] for r in theirs), 3)
    for r in results:
      if r['framework'] == 'cnn_jax':
        ceiling = peak['matmul_gflops'].get(r['dtype'])
        r['fraction_of_matmul_peak'] = round(r['achieved_gflops'] / ceiling, 3) if ceiling else None
    rows.append({'model': name, 'batch_size': MODELS[name][4], 'params': counts.pop(),
                 'ratio_best_to_best': ratios, 'runs': results})
  return rows


def pipeline_worker(experiment: str, batches: int) -> dict:
  """One experiment's input pipeline against its own train step, on the default devices."""
  import importlib  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  from cnn_jax.data import pipeline, sources  # pylint: disable=g-import-not-at-top
  from cnn_jax.train import parallel  # pylint: disable=g-import-not-at-top

  config = importlib.import_module(f'experiments.{experiment}').get_config()
  try:
    source = sources.for_config(config.data, config.data.train_split)
  except FileNotFoundError:
    return {'experiment': experiment, 'skipped': f'{config.data.name} is not prepared here'}
  mesh = parallel.make_mesh()
  shape = pipeline.source_shape(source, config.data)
  stream = pipeline.train_batches(source, config, mesh)
  batch = next(stream)
  jax.block_until_ready(batch)
  start = time.perf_counter()
  for _ in range(batches):
    jax.block_until_ready(next(stream))
  pipeline_rate = batches * config.batch_size / (time.perf_counter() - start)
  *_, step_s = _run_train_step(config, mesh, shape, source.num_classes, batch, 5)
  step_rate = config.batch_size / step_s
  return {'experiment': experiment, 'batch_size': config.batch_size,
          'pipeline_images_per_s': round(pipeline_rate), 'step_images_per_s': round(step_rate),
          'pipeline_over_step': round(pipeline_rate / step_rate, 2)}


def _launch_devices(experiment: str) -> int:
  """The host devices a launch of ``experiment`` makes on this machine (`host.configure`)."""
  import importlib  # pylint: disable=g-import-not-at-top
  return host.launch_devices(importlib.import_module(f'experiments.{experiment}').get_config())


def _first_step_s(stderr: str, launched: float) -> float:
  """Seconds from ``launched`` (wall clock) to the training log's "First step done" line, by the
  line's own timestamp (local time of day, e.g. ``09:10:22.818``; `cnn_jax.console`)."""
  line = next(l for l in stderr.splitlines() if 'First step done' in l)
  clock = datetime.datetime.strptime(line.split()[0], '%H:%M:%S.%f')
  launch = datetime.datetime.fromtimestamp(launched)
  logged = launch.replace(hour=clock.hour, minute=clock.minute, second=clock.second,
                          microsecond=clock.microsecond)
  return (logged - launch).total_seconds() % 86400  # a launch across midnight


def _launch_s(experiment: str, cache: str) -> tuple[float, float]:
  """A one-step run of ``experiment`` with compilation cache ``cache``: seconds from the launch
  to its first step's end, and to the process's end."""
  workdir = tempfile.mkdtemp(prefix='cnn_jax-bench-')
  try:
    launched, start = time.time(), time.perf_counter()
    out = subprocess.run([sys.executable, '-m', 'cnn_jax.main', f'--config={experiment}',
                          f'--workdir={workdir}', '--config.num_steps=1'], cwd=REPO,
                         env=dict(os.environ, JAX_COMPILATION_CACHE_DIR=cache), check=True,
                         capture_output=True, text=True, timeout=1800)
    return _first_step_s(out.stderr, launched), time.perf_counter() - start
  finally:
    shutil.rmtree(workdir)


def compile_cache_benchmark(experiment: str, rounds: int) -> dict:
  """A one-step run launched twice: with an empty compilation cache, then with the one the
  first launch filled. Timed to its first step's end and to the end of the process; ``rounds``
  such pairs, each with a cache of its own, their medians reported (a single launch on a shared
  VM varies by 10-20%)."""
  pairs = []
  for _ in range(rounds):
    cache = tempfile.mkdtemp(prefix='cnn_jax-cache-')
    try:
      cold_first, cold = _launch_s(experiment, cache)
      warm_first, warm = _launch_s(experiment, cache)  # with what the first launch compiled
    finally:
      shutil.rmtree(cache)
    pairs.append({'cold_first_step_s': round(cold_first, 2),
                  'warm_first_step_s': round(warm_first, 2),
                  'first_step_speedup': round(cold_first / warm_first, 2),
                  'cold_s': round(cold, 2), 'warm_s': round(warm, 2),
                  'speedup': round(cold / warm, 2)})
  median = lambda key: round(statistics.median(pair[key] for pair in pairs), 2)
  return {'experiment': experiment, **{key: median(key) for key in pairs[0]}, 'rounds': pairs}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n', maxsplit=1)[0])
  parser.add_argument('--only', choices=('train_step', 'input_pipeline', 'max_pool',
                                         'compile_cache'),
                      action='append', help='run only these benchmarks (repeatable)')
  parser.add_argument('--models', default=None,
                      help='comma-separated train_step models (default: all for the platform)')
  parser.add_argument('--devices', type=int, default=os.cpu_count(),
                      help='host devices of the multi-device CPU configuration')
  parser.add_argument('--rounds', type=int, default=2, help='rounds over the configurations')
  parser.add_argument('--steps', type=int, default=5, help='timed train steps per configuration')
  parser.add_argument('--batches', type=int, default=50, help='timed input-pipeline batches')
  parser.add_argument('--jpeg_batches', type=int, default=30,
                      help='timed batches of 32 JPEGs per jpeg_pipeline configuration')
  parser.add_argument('--out', help='also write the JSON here')
  parser.add_argument('--tables', action='store_true',
                      help="rewrite the docs' tables from benchmarks/results/*.json; run nothing")
  parser.add_argument('--worker', nargs='+', help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.tables:
    print('Rewrote the benchmark tables in', ', '.join(tables.write()))
    return
  if args.worker:
    kind, *rest = args.worker
    if kind in ('jax', 'pipeline', 'peak', 'max_pool'):  # what a launch sets before JAX starts
      host.keep_freed_memory()
    if kind == 'jax':
      result = jax_worker(rest[0], int(rest[1]), rest[2], rest[3], rest[4], int(rest[5]))
    elif kind == 'torch':
      result = torch_worker(rest[0], rest[1], rest[2], int(rest[3]))
    elif kind == 'max_pool':
      result = max_pool_worker()
    elif kind == 'pipeline':
      result = pipeline_worker(rest[0], int(rest[1]))
    elif kind == 'jpeg_cnn_jax':
      result = jpeg_pipeline.cnn_jax_worker(rest[0], rest[1], *map(int, rest[2:]))
    elif kind == 'jpeg_torchvision':
      result = jpeg_pipeline.torchvision_worker(rest[0], *map(int, rest[1:]))
    elif kind == 'jpeg_tf_data':
      result = jpeg_pipeline.tf_data_worker(rest[0], *map(int, rest[1:]))
    else:
      result = peak_worker()
    print(json.dumps(result))
    return

  import jax  # pylint: disable=g-import-not-at-top
  import platform  # pylint: disable=g-import-not-at-top
  only = set(args.only or ('train_step', 'input_pipeline', 'max_pool', 'compile_cache'))
  gpu = jax.default_backend() == 'gpu'
  peak = _spawn(['peak'])
  report = {'date': time.strftime('%Y-%m-%d'),
            'machine': {'backend': jax.default_backend(), 'device': jax.devices()[0].device_kind,
                        'cpu': host.cpu(),
                        'cpu_count': os.cpu_count(), 'jax': jax.__version__,
                        'python': platform.python_version(), **peak}}
  try:
    import torch  # pylint: disable=g-import-not-at-top
    report['machine']['torch'] = torch.__version__
  except ImportError:
    raise SystemExit('The train_step benchmark needs PyTorch: ./launch.sh bench installs the '
                     '[bench] extra.') from None
  if 'train_step' in only:
    models = args.models.split(',') if args.models else [
        name for name, spec in MODELS.items() if gpu or not spec[5]]
    # The run's own tuning file, empty at the first round: its choices go into the report.
    scratch = tempfile.mkdtemp(prefix='cnn_jax-tuning-')
    tuning_file = os.environ['CNN_JAX_TUNING_FILE'] = os.path.join(scratch, 'tuning.json')
    try:
      report['train_step'] = train_step_benchmarks(models, args.rounds, args.steps, args.devices,
                                                   gpu, peak)
      if os.path.exists(tuning_file):
        with open(tuning_file, encoding='utf-8') as f:
          report['tuning'] = json.load(f)
    finally:
      del os.environ['CNN_JAX_TUNING_FILE']
      shutil.rmtree(scratch)
  if 'input_pipeline' in only:
    report['input_pipeline'] = [
        _spawn(['pipeline', name, str(args.batches)], _launch_devices(name)) for name in EXPERIMENTS]
    scratch = tempfile.mkdtemp(prefix='cnn_jax-jpeg-')
    try:
      report['jpeg_pipeline'] = jpeg_pipeline.benchmark(
          _spawn, jpeg_pipeline.make_set(os.path.join(scratch, 'photos')),
          os.path.join(scratch, 'tfds'), args.jpeg_batches, args.rounds)
    finally:
      shutil.rmtree(scratch)
  if 'max_pool' in only and not gpu:
    report['max_pool'] = _spawn(['max_pool'])
  if 'compile_cache' in only:
    report['compile_cache'] = [compile_cache_benchmark(name, args.rounds)
                               for name in ('default', 'shapes_fcn')]
  emit(report, args.out)


if __name__ == '__main__':
  main()
