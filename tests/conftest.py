"""Test set-up: 4 forced CPU devices, configured before jax is first imported."""

import gc
import os

os.environ['XLA_FLAGS'] = ' '.join([
    os.environ.get('XLA_FLAGS', ''),
    '--xla_force_host_platform_device_count=4',
    # A multi-device CPU collective that waits on a stuck peer fails fast instead of hanging.
    '--xla_cpu_collective_call_terminate_timeout_seconds=10',
]).strip()
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
# Compiled programs persist between tests, the processes they start, and later runs of the suite.
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR',
                      os.path.join(os.path.expanduser('~'), '.cache', 'cnn_jax', 'jax-tests'))
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0.5')
# Every convolution computed as the rules' thresholds say, the same in every run of the suite;
# tests/test_tuning.py turns the timing on where it tests it.
os.environ['CNN_JAX_TUNING_FILE'] = ''

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position

jax.config.update('jax_threefry_partitionable', True)

import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position


@pytest.fixture(scope='session')
def data_dir(tmp_path_factory):
  """One TFDS data directory per test session: offline datasets are prepared once."""
  return str(tmp_path_factory.mktemp('tfds'))


def pytest_runtest_setup(item):  # pylint: disable=unused-argument
  """Each test starts with what the tests before it left alive (mostly JAX's caches of traces and
  compiled programs, over a million objects by a worker's end) frozen out of Python's cyclic
  collections, after one collection of what the last test made. Unfrozen, each full collection
  would walk them all, again and again over a worker's tests."""
  gc.collect()
  gc.freeze()
