"""The benchmark harness runs (its figures are read from `./launch.sh bench`, not asserted)."""

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_train_step_worker_reports_json():
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=2')
  out = subprocess.run([sys.executable, 'benchmarks/run.py', '--worker', 'simple_cnn', 'pmap', '2'],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=True)
  row = json.loads(out.stdout.strip().splitlines()[-1])
  assert row['devices'] == 2 and row['mode'] == 'pmap' and row['examples_per_s'] > 0
