"""ResNet-50 in bfloat16 on one GPU, fed from JPEGs through cnn_jax's input pipeline on the
host's cores, against the same step on device-resident data (JSON to stdout and --out).

  python benchmarks/gpu_imagenet.py --out result.json     # benchmarks/gpu_check.sh runs it

For each batch size: the train step's images/s on one batch already on the device (the
ceiling), the input pipeline's own images/s (batches consumed, no step), and the step fed by
the pipeline (the imagenet_resnet50 recipe: inception crop + flip, uint8 to the device,
normalised there), over a synthetic set of variable-size JPEGs made first.
"""

import argparse
import json
import os
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def _rate(next_batch, step, count: int, batch_size: int, warm: int) -> float:
  """Images/s of ``count`` calls of ``step(next_batch())`` after ``warm`` (which for a stream
  must also drain its buffers: a full buffer is served faster than the stream makes it)."""
  import jax  # pylint: disable=g-import-not-at-top
  for _ in range(warm):
    jax.block_until_ready(step(next_batch()))
  start = time.perf_counter()
  logs = None
  for _ in range(count):
    logs = step(next_batch())
  jax.block_until_ready(logs)
  return round(count * batch_size / (time.perf_counter() - start), 1)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n', maxsplit=1)[0])
  parser.add_argument('--batch_sizes', default='128,256')
  parser.add_argument('--steps', type=int, default=40)
  parser.add_argument('--per_class', type=int, default=200, help='JPEGs per class, 10 classes')
  parser.add_argument('--out')
  args = parser.parse_args()

  import jax  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  from benchmarks import run  # pylint: disable=g-import-not-at-top
  from cnn_jax import arithmetic  # pylint: disable=g-import-not-at-top
  from cnn_jax.data import image_folder, pipeline, sources  # pylint: disable=g-import-not-at-top
  from cnn_jax.layers.convolve import use  # pylint: disable=g-import-not-at-top
  from cnn_jax.train import loop, optim, parallel  # pylint: disable=g-import-not-at-top
  from cnn_jax.train import steps as train_steps  # pylint: disable=g-import-not-at-top
  from experiments import imagenet_resnet50  # pylint: disable=g-import-not-at-top

  flags.FLAGS.mark_as_parsed()
  scratch = tempfile.mkdtemp(prefix='cnn_jax-gpu-')
  start = time.perf_counter()
  image_folder.write_synthetic(os.path.join(scratch, 'photos'), 10, args.per_class)
  made_s = time.perf_counter() - start
  report = {'date': time.strftime('%Y-%m-%d'), 'device': jax.devices()[0].device_kind,
            'jax': jax.__version__, 'host_cores': os.cpu_count(),
            'jpegs': 10 * args.per_class, 'jpeg_set_seconds': round(made_s, 1), 'runs': []}
  mesh = parallel.make_mesh()
  for batch_size in map(int, args.batch_sizes.split(',')):
    config = imagenet_resnet50.get_config()
    config.data.name, config.data.folder = 'image_folder', os.path.join(scratch, 'photos')
    config.data.data_dir = os.path.join(scratch, 'tfds')
    config.batch_size, config.compute_dtype = batch_size, 'bfloat16'
    source = sources.for_config(config.data, 'train')
    schedule = optim.learning_rate(config.optim, 100, 10000, batch_size)
    tx = optim.create(config.optim, schedule)
    model = loop.build_model(config, 1000)
    with use(config.conv_impl):
      state = jax.jit(loop.state_initializer(model, tx, (224, 224, 3), config),
                      out_shardings=parallel.replicated(mesh))()
      step_fn = train_steps.make_train_step(model, tx, schedule, config, mesh)
    stream = pipeline.train_batches(source, config, mesh)
    first = next(stream)
    started = time.perf_counter()
    compiled = step_fn.lower(state, first).compile()
    compile_s = time.perf_counter() - started

    def step(batch):
      nonlocal state
      state, logs = compiled(state, batch)
      return logs

    buffered = config.data.prefetch + 2 * pipeline.workers(source, config.data) + 5
    synthetic = _rate(lambda: first, step, args.steps, batch_size, 5)  # the batch is not donated
    supply = _rate(lambda: next(stream), lambda b: b['image'], args.steps, batch_size, buffered)
    fed = _rate(lambda: next(stream), step, args.steps, batch_size, buffered)
    # The model's own count (XLA's cost analysis does not see into cuDNN's convolutions): a
    # training step is three forward passes' multiply-adds, two FLOPs each.
    flops = 6 * arithmetic.summarize(model, (1, 224, 224, 3), print_fn=None).total_macs
    report['runs'].append({
        'batch_size': batch_size, 'compile_s': round(compile_s, 1),
        'step_images_per_s_device_resident': synthetic,
        'pipeline_images_per_s': supply, 'step_images_per_s_from_jpegs': fed,
        'fed_over_resident': round(fed / synthetic, 3),
        'workers': pipeline.workers(source, config.data),
        'model_tflops_per_s': round(flops * synthetic / 1e12, 1)})
    print(json.dumps(report['runs'][-1]), flush=True)
  run.emit(report, args.out)


if __name__ == '__main__':
  main()
