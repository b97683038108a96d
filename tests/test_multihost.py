"""A real multi-process run on localhost: two `cnn_jax.main` processes of 2 CPU devices each."""

import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from cnn_jax.train import checkpoint
from tests.test_faults import wait_for_progress

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
          '--config.checkpoint.every=3', '--config.model.kwargs.widths=(8, 16)',
          '--config.data.batches_per_transfer=4']  # 4 per transfer, resumed at step 6


@pytest.mark.slow
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
  final = json.load(open(os.path.join(workdir, 'final_metrics.json')))
  assert final['last']['test']['count'] == 400 and final['best']['test']['count'] == 400
  assert checkpoint.manager(workdir, read_only=True).all_steps() == [3, 6]

  # The same workdir resumes in one process on 4 devices: another topology, same checkpoint.
  result = subprocess.run([sys.executable, '-m', 'cnn_jax.main', *_flags(workdir, data_dir, 9)],
                          cwd=REPO, env=_env(4), capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'Resumed from' in result.stderr and 'at step 6' in result.stderr
  assert checkpoint.manager(workdir, read_only=True).latest_step() == 9


@pytest.mark.slow
def test_a_sigterm_to_one_process_stops_both_at_the_same_step_with_one_checkpoint(tmp_path):
  workdir, data_dir = str(tmp_path / 'run'), str(tmp_path / 'data')
  port = _free_port()
  flags = [f'--workdir={workdir}', f'--config.data.data_dir={data_dir}',
           '--config.num_steps=100000', '--config.log_every=4', '--config.eval_every=100000',
           '--config.checkpoint.every=100000', '--config.model.kwargs.widths=(8, 16)',
           f'--coordinator_address=127.0.0.1:{port}', '--num_processes=2']
  logs = [open(tmp_path / f'process{i}.log', 'w+', encoding='utf-8') for i in range(2)]
  processes = [subprocess.Popen([sys.executable, '-m', 'cnn_jax.main', *flags, f'--process_id={i}'],
                                cwd=REPO, env=_env(2), stdout=log, stderr=subprocess.STDOUT,
                                text=True) for i, log in enumerate(logs)]
  try:
    # Process 0 logs steps that process 1 took part in: both are in the loop, handlers installed.
    wait_for_progress(workdir, processes[0], 8)
    processes[1].send_signal(signal.SIGTERM)
    codes = [p.wait(timeout=120) for p in processes]
  finally:
    for p in processes:
      p.kill()
  outputs = [log.seek(0) or log.read() for log in logs]
  assert codes == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
  # Only process 0 reports, naming the signal and the process that received it.
  assert 'Stopped by SIGTERM on process 1 at step ' in outputs[0], outputs[0][-3000:]
  step = int(outputs[0].split('Stopped by SIGTERM on process 1 at step ')[1].split('/')[0])
  assert 'Stopped by' not in outputs[1]
  # Both stopped at that step: the one checkpoint is whole there (a process that went on alone
  # would have hung in the next collective, not exited 0).
  assert checkpoint.complete_steps(workdir) == [step] and step % 4 == 0

  result = subprocess.run([sys.executable, '-m', 'cnn_jax.main', *flags[:2],
                           f'--config.num_steps={step + 2}', *flags[3:7]], cwd=REPO, env=_env(4),
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert f'at step {step}' in result.stderr
