"""The benchmark tables of the docs, generated from the JSON in benchmarks/results/.

A table sits between a first line naming its JSON file (and, where the file holds several
benchmarks, which one) and an end line:

  <!-- Generated from benchmarks/results/cpu_train_step.json: ./launch.sh bench --tables -->
  <!-- Generated from benchmarks/results/cpu_input_pipeline.json (jpeg_pipeline): ./launch.sh bench --tables -->
  ...
  <!-- End of the generated table. -->

A pattern with ``*`` names several files, one row each, and says which table of them:
``benchmarks/results/cpu_train_step*.json (cpu_families)`` gives the train step's ratios on each
CPU family measured (the latest run in ``cpu_train_step.json``, each other family's last in
``cpu_train_step.FAMILY.json``).

``./launch.sh bench --tables`` rewrites every such table in README.md and docs/*.md from the files
as they are now (a new result: ``./launch.sh bench --out=benchmarks/results/NAME.json``, then a
marker where its table goes); a test fails when one is stale.
"""

import glob
import json
import os
import re
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from cnn_jax import generated  # pylint: disable=g-import-not-at-top,wrong-import-position

COMMAND = './launch.sh bench --tables'
DTYPES = ('float32', 'bfloat16', 'float16')
MARKER = re.compile(r'<!-- Generated from (benchmarks/results/[\w.*-]+\.json)(?: \((\w+)\))?: '
                    + re.escape(COMMAND) + ' -->')
END = '<!-- End of the generated table. -->'


def _number(value: float) -> str:
  """A rate as the docs print it: thousands separated, a decimal only under 100 (where the JSON
  has one)."""
  return f'{value:,.0f}' if value >= 100 or isinstance(value, int) else f'{value:.1f}'


def _times(ratio: float) -> str:
  return f'{ratio:.0f}x' if ratio >= 10 else f'{ratio:.1f}x'


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
  return ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header),
          *('| ' + ' | '.join(row) + ' |' for row in rows)]


def _cpu(info: dict) -> str:
  """A CPU's model and the vector and matrix extensions that decide its kernels."""
  cpu = info.get('cpu', '')
  if isinstance(cpu, dict):  # as cnn_jax.host.cpu() gives them
    return f'{cpu["model"]} ({", ".join(cpu["extensions"]) or "no AVX2"})'
  return cpu


def machine(result: dict) -> str:
  """Where a result was measured, in one line: the date, the processor (a CPU's model and its
  extensions), the cores and the libraries."""
  info = result.get('machine', {})
  cpu = _cpu(info)
  cores = info.get('cpu_count') or result.get('host_cores')
  if info.get('backend', 'gpu') == 'cpu':
    where = f'{cpu or "CPU"}, {cores} cores'
  else:
    where = f'{info.get("device") or result.get("device")}, {cores} host cores'
  parts = [result['date'], where]
  if info.get('jax') or result.get('jax'):
    parts.append(f'jax {info.get("jax") or result.get("jax")}')
  if info.get('torch'):
    parts.append(f'PyTorch {info["torch"]}')
  rates = info.get('matmul_gflops', {})
  if rates:
    unit, scale = ('TFLOP/s', 1e-3) if max(rates.values()) > 1e4 else ('GFLOP/s', 1)
    parts.append(f"XLA's {info['matmul_size']}-square matmul at " + ', '.join(
        f'{v * scale:,.0f} {unit} ({dtype})' for dtype, v in rates.items()))
  return '*' + '; '.join(parts) + '.*'


def _config(run: dict) -> str:
  if run['framework'] == 'cnn_jax':
    if 'chosen_from' in run:
      return f'cnn_jax `{run["conv_impl"]}`, tuned, devices timed (of {run["chosen_from"]})'
    devices = run['devices']
    return (f'cnn_jax `{run["conv_impl"]}`, {devices} device{"s" if devices > 1 else ""}'
            + (', tuned' if run.get('tuned') else ''))
  return 'PyTorch ' + {'nchw': 'NCHW'}.get(run['layout'], run['layout'])


def _cell(run: dict) -> str:
  """A configuration's examples/s, and the devices it chose where it chose them."""
  chosen = f' (on {run["devices"]})' if 'chosen_from' in run else ''
  return _number(run['examples_per_s']) + chosen


def train_step(rows: list[dict]) -> list[str]:
  """examples/s of each configuration, per model and precision, and the best-to-best ratio."""
  configs = []
  for model in rows:
    for run in model['runs']:
      if _config(run) not in configs:
        configs.append(_config(run))
  body = []
  for model in rows:
    for dtype, ratio in sorted(model['ratio_best_to_best'].items(),
                               key=lambda item: DTYPES.index(item[0])):
      runs = {_config(r): r for r in model['runs'] if r['dtype'] == dtype}
      best = lambda framework: max((r for r in runs.values() if r['framework'] == framework),
                                   key=lambda r: r['examples_per_s'])
      ours, theirs = best('cnn_jax'), best('torch')
      launch = _launch_compile([r for r in runs.values() if r['framework'] == 'cnn_jax'])
      flops = ours['achieved_gflops']
      rate = f'{flops / 1e3:,.0f} TFLOP/s' if flops > 1e4 else f'{flops:,.0f} GFLOP/s'
      body.append([f'`{model["model"]}`', dtype,
                   *(_cell(runs[c]) if c in runs else '-' for c in configs),
                   f'**{ratio:.2f}x**', f'{rate}, {ours["fraction_of_matmul_peak"]:.0%}',
                   launch,
                   f'{ours["peak_memory_mib"]:,} / {theirs["peak_memory_mib"]:,} MiB'])
  return _table(['model, batch ' + str(rows[0]['batch_size']), 'precision', *configs,
                 'cnn_jax / PyTorch, best to best', "cnn_jax's best FLOP/s, share of matmul rate",
                 "the default's compile: first launch / later (thresholds)",
                 'peak memory, cnn_jax / PyTorch'], body)


def cpu_families(results: list[dict]) -> list[str]:
  """The train step's best-to-best ratio per model on each CPU family, latest first."""
  models = list(dict.fromkeys(m['model'] for r in results for m in r['train_step']))
  dtypes = sorted({d for r in results for m in r['train_step'] for d in m['ratio_best_to_best']},
                  key=DTYPES.index)

  def ratios(result, model):
    measured = next((m['ratio_best_to_best'] for m in result['train_step']
                     if m['model'] == model), {})
    return ' / '.join(f'{measured[d]:.2f}x' if d in measured else '-' for d in dtypes)

  rows = [[_cpu(r['machine']), str(r['machine']['cpu_count']), r['date'],
           *(ratios(r, model) for model in models)]
          for r in sorted(results, key=lambda r: r['date'], reverse=True)]
  return _table(['CPU (extensions)', 'cores', 'date',
                 *(f'`{model}`, {" / ".join(dtypes)}' for model in models)], rows)


def _launch_compile(ours: list[dict]) -> str:
  """The default configuration's compile seconds (`auto` on the most devices made, tuned and
  its devices timed where the run has such a one): at the first launch, with nothing tuned yet,
  and later; beside them, the same configuration's with the thresholds."""
  made = lambda r: r.get('chosen_from', r['devices'])
  most = max(map(made, ours))
  launch = [r for r in ours if made(r) == most and r['conv_impl'] == 'auto']
  default = max(launch, key=lambda r: (r.get('tuned', False), 'chosen_from' in r))
  if not default.get('tuned'):
    return f'{default["compile_s"]:.1f} s'
  untuned = [r for r in launch if not r.get('tuned')]
  return (f'{default["first_compile_s"]:.1f} / {default["compile_s"]:.1f} s'
          + (f' ({untuned[0]["compile_s"]:.1f} s)' if untuned else ''))


def max_pool(rows: list[dict]) -> list[str]:
  return _table(['input', 'pool', "XLA's rule", "`'mixed'`", 'speed-up'], [
      ['x'.join(map(str, r['input'])),
       f'{r["window"]}x{r["window"]}/{r["stride"]}' + (
           f" '{r['padding']}'" if r['padding'] != 'VALID' else ''),
       f'{r["xla_ms"]:.1f} ms', f'{r["mixed_ms"]:.1f} ms', f'{r["speedup"]:.1f}x'] for r in rows])


def input_pipeline(rows: list[dict]) -> list[str]:
  measured = [r for r in rows if 'skipped' not in r]
  lines = _table(['experiment', 'pipeline, images/s', 'train step, images/s', 'ratio'], [
      [f'`{r["experiment"]}`', _number(r['pipeline_images_per_s']),
       _number(r['step_images_per_s']), _times(r['pipeline_over_step'])] for r in measured])
  skipped = [f'`{r["experiment"]}`' for r in rows if 'skipped' in r]
  if skipped:
    lines += ['', f'Not measured (their data is not prepared there): {", ".join(skipped)}.']
  return lines


def jpeg_pipeline(result: dict) -> list[str]:
  rows = [[r['framework'], str(r['workers']), _number(r['images_per_s']),
           _number(r['images_per_cpu_s'])] for r in result['runs']]
  return _table(['pipeline', 'workers (processes; tf.data: threads)', 'images/s',
                 'images per CPU-second'], rows)


def jpeg_training(rows: list[dict]) -> list[str]:
  return _table(['batch', 'train step, batch on the device', 'pipeline alone',
                 'train step fed from JPEGs', 'fed / on device', 'model TFLOP/s'], [
      [str(r['batch_size']), _number(r['step_images_per_s_device_resident']),
       _number(r['pipeline_images_per_s']), _number(r['step_images_per_s_from_jpegs']),
       f'{r["fed_over_resident"]:.2f}', f'{r["model_tflops_per_s"]:.0f}'] for r in rows])


def compile_cache(rows: list[dict]) -> list[str]:
  return _table(['experiment', 'first step, empty cache', 'warm cache', 'speed-up',
                 'whole launch, empty cache', 'warm cache', 'speed-up'], [
      [f'`{r["experiment"]}`', f'{r["cold_first_step_s"]:.2f} s', f'{r["warm_first_step_s"]:.2f} s',
       f'**{r["first_step_speedup"]:.1f}x**', f'{r["cold_s"]:.2f} s', f'{r["warm_s"]:.2f} s',
       f'{r["speedup"]:.1f}x'] for r in rows])


RENDERERS = {'train_step': train_step, 'max_pool': max_pool, 'input_pipeline': input_pipeline,
             'jpeg_pipeline': jpeg_pipeline, 'runs': jpeg_training,
             'compile_cache': compile_cache, 'cpu_families': cpu_families}


def _load(path: str) -> dict:
  with open(path, encoding='utf-8') as f:
    return json.load(f)


def section(begin: str) -> str:
  """The table a marker line asks for, from its JSON as it is now, with both marker lines."""
  match = MARKER.fullmatch(begin)
  path, key = match.group(1), match.group(2)
  if '*' in path:
    if key not in RENDERERS:
      raise ValueError(f'{begin}: a pattern of files must name its table, one of '
                       f'{sorted(RENDERERS)}, as in "{path} (cpu_families)".')
    results = [_load(name) for name in sorted(glob.glob(os.path.join(REPO, path)))]
    return '\n'.join([begin, '', *RENDERERS[key](results), END])
  result = _load(os.path.join(REPO, path))
  key = key or next(k for k in RENDERERS if k in result)
  return '\n'.join([begin, machine(result), '', *RENDERERS[key](result[key]), END])


def documents() -> list[str]:
  return [os.path.join(REPO, 'README.md'), *sorted(glob.glob(os.path.join(REPO, 'docs', '*.md')))]


def markers(text: str) -> list[str]:
  return [m.group(0) for m in MARKER.finditer(text)]


def write() -> list[str]:
  """Rewrites every generated table; returns the documents that hold one."""
  written = []
  for path in documents():
    with open(path, encoding='utf-8') as f:
      found = markers(f.read())
    for begin in found:
      generated.replace(path, begin, END, section(begin))
    if found:
      written.append(os.path.relpath(path, REPO))
  return written
