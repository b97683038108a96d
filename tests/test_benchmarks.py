"""The benchmark harness runs (its figures are read from `./launch.sh bench`, not asserted)."""

import importlib.util
import json
import os
import re
import subprocess
import sys
import time

import pytest

from cnn_jax import arithmetic, models

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _lenet5_on_2_devices(tuning, tune: str) -> dict:
  """The train-step worker's row for LeNet-5 in a 2-device process, two timed steps."""
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=2',
             CNN_JAX_TUNING_FILE=str(tuning))
  out = subprocess.run([sys.executable, 'benchmarks/run.py', '--worker', 'jax', 'lenet5', '2',
                        'auto', 'float32', tune, '2'], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=300, check=True)
  return json.loads(out.stdout.strip().splitlines()[-1])


def test_train_step_worker_reports_json(tmp_path):
  tuning = tmp_path / 'tuning.json'
  row = _lenet5_on_2_devices(tuning, 'tuned')
  assert row['devices'] == 2 and row['conv_impl'] == 'auto' and row['examples_per_s'] > 0
  assert row['tuned'] and tuning.exists()  # LeNet-5's C5 (16 -> 120 channels, 5x5) was timed
  assert row['params'] == 61_706 and row['compile_s'] > 0 and row['peak_memory_mib'] > 0
  macs = arithmetic.summarize(models.get_model('lenet5'), (1, 32, 32, 1), print_fn=None).total_macs
  assert row['model_flops_per_step'] == 6 * 128 * macs
  assert row['xla_flops_per_step'] > 0 and row['achieved_gflops'] > 0


@pytest.mark.slow
def test_the_default_configuration_reports_the_devices_it_chose(tmp_path):
  tuning = tmp_path / 'tuning.json'
  row = _lenet5_on_2_devices(tuning, 'chosen')
  entries = json.load(open(tuning, encoding='utf-8'))
  searched = [e for machine in entries.values() for key, e in machine.items()
              if key.startswith('train step')]
  assert len(searched) == 1 and set(searched[0]['ms']) == {'1', '2'}
  assert row['chosen_from'] == 2 and row['devices'] == searched[0]['devices']
  assert row['tuned'] and row['compile_s'] > 0 and row['examples_per_s'] > 0


def test_the_tables_show_the_default_count_and_its_first_launch():
  from benchmarks import tables  # pylint: disable=g-import-not-at-top
  run = lambda devices, tuned, compile_s, **chosen: {
      'framework': 'cnn_jax', 'devices': devices, 'conv_impl': 'auto', 'tuned': tuned,
      'examples_per_s': 800.0, 'compile_s': compile_s, 'first_compile_s': 10 * compile_s,
      **chosen}
  ours = [run(1, True, 1.0, chosen_from=2), run(2, True, 2.0), run(2, False, 3.0)]
  assert tables._launch_compile(ours) == '10.0 / 1.0 s (3.0 s)'  # pylint: disable=protected-access
  assert tables._cell(ours[0]) == '800 (on 1)'  # pylint: disable=protected-access
  assert tables._config(ours[0]) == 'cnn_jax `auto`, tuned, devices timed (of 2)'  # pylint: disable=protected-access


@pytest.mark.slow
def test_the_compile_benchmark_times_a_launch_to_its_first_step(tmp_path, data_dir):
  """The training log's "First step done" line, read by its own timestamp, falls inside the
  launch and before its end (the evaluation and the checkpoint come after it). Before it, the
  launch compiles its programs (init, the batch's normalisation on the devices, the step) and
  nothing else: an eager op (a random key made outside a
  trace) is compiled at every launch, the persistent cache skipping programs that fast."""
  spec = importlib.util.spec_from_file_location('bench', os.path.join(REPO, 'benchmarks', 'run.py'))
  bench = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(bench)
  launched, start = time.time(), time.perf_counter()
  out = subprocess.run([sys.executable, '-m', 'cnn_jax.main', f'--workdir={tmp_path / "run"}',
                        f'--config.data.data_dir={data_dir}', '--config.num_steps=1'], cwd=REPO,
                       env=dict(os.environ, JAX_LOG_COMPILES='1'), capture_output=True, text=True,
                       timeout=300, check=True)
  whole = time.perf_counter() - start
  assert 0 < bench._first_step_s(out.stderr, launched) < whole  # pylint: disable=protected-access
  before_first_step = out.stderr[:out.stderr.index('First step done')]
  assert re.findall(r'Finished XLA compilation of (\S+)', before_first_step) == [
      'jit(init)', 'jit(_finish)', 'jit(step)']


def test_steps_are_timed_once_memory_stopped_growing():
  """A step that grows the process for its first 4 calls (64 MiB of fresh pages each): 3 quiet
  calls follow them before the 2 timed ones."""
  code = '''
import numpy as np
from benchmarks import run
kept, calls = [], []
def step():
  calls.append(1)
  if len(calls) <= 4:
    kept.append(np.ones(2**24, np.float32))
run._steady_step_s(step, 2)
print(len(calls))
'''
  out = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True, text=True,
                       timeout=120, check=True)
  assert int(out.stdout.split()[-1]) == 4 + 3 + 2


def test_the_report_names_the_cpu_model_and_its_vector_extensions():
  from cnn_jax import host  # pylint: disable=g-import-not-at-top
  described = host.cpu()
  flags = open('/proc/cpuinfo', encoding='utf-8').read().split('\n\n')[0]
  assert described['model'] and described['model'] in flags
  assert described['extensions'] == [e for e in host.CPU_EXTENSIONS
                                     if f' {e} ' in f' {flags.split("flags")[1].split(":", 1)[1]} ']


@pytest.mark.parametrize('extensions,bfloat16', [(['avx2', 'fma'], False),
                                                 (['avx2', 'avx512f', 'avx512_bf16'], True),
                                                 (['avx2', 'amx_tile', 'amx_bf16'], True)])
def test_bfloat16_is_measured_where_the_cpu_multiplies_it(monkeypatch, extensions, bfloat16):
  from benchmarks import run  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(run.host, 'cpu', lambda: {'model': 'CPU', 'extensions': extensions})
  runs = run._configurations('lenet5', False, 2)  # pylint: disable=protected-access
  dtypes = {args[4] if args[0] == 'jax' else args[3] for args, _ in runs}
  assert dtypes == ({'float32', 'bfloat16'} if bfloat16 else {'float32'})
