"""What a launch sets before JAX starts: one CPU device per core (as many as the batches split
into), a persistent compilation cache and a malloc that keeps freed pages, unless the user chose
otherwise."""

import json
import os
import re
import subprocess
import sys

import pytest

from cnn_jax import host
from tests.test_train import REPO


def test_host_devices_is_the_most_cores_every_batch_divides_into():
  assert host.host_devices(2, [64, 256]) == 2
  assert host.host_devices(6, [64, 256]) == 4
  assert host.host_devices(16, [96, 200]) == 8
  assert host.host_devices(3, [7]) == 1
  assert host.host_devices(0, [8]) == 1


def _launch(tmp_path, data_dir, env, name, *extra):
  workdir = tmp_path / name
  result = subprocess.run(
      [sys.executable, '-m', 'cnn_jax.main', *extra, f'--workdir={workdir}',
       '--config.num_steps=4', f'--config.data.data_dir={data_dir}', '--config.eval_every=4'],
      cwd=REPO, env=env,
      capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert json.load(open(workdir / 'final_metrics.json'))['last']['test']['count'] == 400
  return int(re.search(r'Devices: (\d+) x cpu', result.stderr).group(1))


@pytest.mark.slow
def test_a_launch_uses_every_core_and_fills_the_compilation_cache(tmp_path, data_dir):
  env = {k: v for k, v in os.environ.items()
         if k not in ('XLA_FLAGS', 'JAX_COMPILATION_CACHE_DIR',
                      'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS')}
  env['XDG_CACHE_HOME'] = str(tmp_path / 'cache')
  devices = _launch(tmp_path, data_dir, env, 'default')
  assert devices == host.host_devices(os.cpu_count(), [64, 256])
  cached = os.listdir(tmp_path / 'cache' / 'cnn_jax' / 'jax')
  assert any(name.startswith('jit_step') for name in cached)
  # What the user sets wins: their device count, and an empty cache directory turns it off.
  env.update(XLA_FLAGS='--xla_force_host_platform_device_count=1', JAX_COMPILATION_CACHE_DIR='',
             XDG_CACHE_HOME=str(tmp_path / 'other'))
  assert _launch(tmp_path, data_dir, env, 'chosen') == 1
  assert not os.path.exists(tmp_path / 'other')


@pytest.mark.slow
def test_a_config_file_that_imports_jax_still_gets_every_core_and_the_cache(tmp_path, data_dir):
  config = tmp_path / 'with_jax.py'
  config.write_text('import jax.numpy as jnp\nfrom experiments.default import get_config\n')
  env = {k: v for k, v in os.environ.items()
         if k not in ('XLA_FLAGS', 'JAX_COMPILATION_CACHE_DIR',
                      'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS')}
  env['XDG_CACHE_HOME'] = str(tmp_path / 'cache')
  assert _launch(tmp_path, data_dir, env, 'run', f'--config={config}') == host.host_devices(
      os.cpu_count(), [64, 256])
  assert os.listdir(tmp_path / 'cache' / 'cnn_jax' / 'jax')


_FAULTS = '''
import resource, sys
import numpy as np
from cnn_jax import host
applied = host.keep_freed_memory()
block = np.ones(2**26, np.float32)  # 256 MiB: glibc's size for a fresh mapping of its own
del block
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
block = np.ones(2**26, np.float32)
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
'''


def _second_allocation(**env):
  # numpy's huge pages would hide the 4 KiB faults this counts.
  env = dict({k: v for k, v in os.environ.items() if k not in host.MALLOC_VARIABLES},
             NUMPY_MADVISE_HUGEPAGE='0', **env)
  out = subprocess.run([sys.executable, '-c', _FAULTS], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=120, check=True).stdout.split()
  return out[0] == 'True', int(out[1])


def test_freed_memory_is_reused_without_page_faults_unless_the_user_tuned_malloc():
  applied, faults = _second_allocation()
  assert applied and faults < 1000, faults  # the pages are already the process's
  applied, faults = _second_allocation(MALLOC_ARENA_MAX='2')
  assert not applied and faults > 50_000, faults  # every 4 KiB page of 256 MiB faulted again
