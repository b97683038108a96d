"""A real multi-process run on localhost: two `cnn_jax.main` processes of 2 CPU devices each."""

import json
import os
import socket
import subprocess
import sys

from cnn_jax.train import checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _env(devices: int) -> dict:
  env = dict(os.environ)
  env['JAX_PLATFORMS'] = 'cpu'
  env['XLA_FLAGS'] = (f'--xla_force_host_platform_device_count={devices} '
                      '--xla_cpu_collective_call_terminate_timeout_seconds=30')
  return env


def _flags(workdir, data_dir, steps):
  return [f'--workdir={workdir}', f'--config.data.data_dir={data_dir}',
          f'--config.num_steps={steps}', '--config.log_every=3', '--config.eval_every=3',
          '--config.checkpoint.every=3', '--config.model.kwargs.widths=(8, 16)']


def test_two_processes_train_together_and_one_resumes(tmp_path):
  workdir, data_dir = str(tmp_path / 'run'), str(tmp_path / 'data')
  port = _free_port()
  processes = [
      subprocess.Popen([sys.executable, '-m', 'cnn_jax.main', *_flags(workdir, data_dir, 6),
                        f'--coordinator_address=127.0.0.1:{port}', '--num_processes=2',
                        f'--process_id={i}'],
                       cwd=REPO, env=_env(2), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True)
      for i in range(2)]
  outputs = [p.communicate(timeout=300)[0] for p in processes]
  assert [p.returncode for p in processes] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
  # Only process 0 reports and writes logs; the eval covers every test digit once over both hosts.
  assert 'test accuracy' in outputs[0] and 'test accuracy' not in outputs[1]
  assert json.load(open(os.path.join(workdir, 'final_metrics.json')))['count'] == 400
  assert checkpoint.manager(workdir, read_only=True).all_steps() == [3, 6]

  # The same workdir resumes in one process on 4 devices: another topology, same checkpoint.
  result = subprocess.run([sys.executable, '-m', 'cnn_jax.main', *_flags(workdir, data_dir, 9)],
                          cwd=REPO, env=_env(4), capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'Resumed from' in result.stderr and 'at step 6' in result.stderr
  assert checkpoint.manager(workdir, read_only=True).latest_step() == 9
