"""A researcher's first hour: their own model, any field from the command line, mixed precision,
the start-of-run log, the experiments outside the checkout and the accelerator set-up."""

import json
import os
import re
import subprocess
import sys
import textwrap
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_jax import conv_form, models
from cnn_jax.models import registry as model_registry
from cnn_jax.data import sources
from cnn_jax.errors import ConfigError
from cnn_jax.train import loop, optim, parallel, steps
from experiments import default
from tests.test_train import REPO, digits_config

# The README's "Your own model" example, as a researcher would write it: outside the package.
MY_NETS = textwrap.dedent('''\
    from typing import Any

    import flax.linen as nn


    class TinyNet(nn.Module):
      num_classes: int
      width: int = 8
      axis_name: str | None = None  # BatchNorm statistics over the devices in 'pmap' mode
      dtype: Any = None              # config.compute_dtype

      @nn.compact
      def __call__(self, x, train: bool = False):
        x = nn.Conv(self.width, (3, 3), dtype=self.dtype)(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, axis_name=self.axis_name,
                         dtype=self.dtype)(x)
        x = nn.avg_pool(nn.relu(x), (2, 2), strides=(2, 2))
        return nn.Dense(self.num_classes, dtype=self.dtype)(x.reshape(x.shape[0], -1))
    ''')


@pytest.fixture
def registry(monkeypatch):
  """Registrations made by a test end with it."""
  monkeypatch.setattr(model_registry, '_REGISTRY', dict(model_registry._REGISTRY))  # pylint: disable=protected-access


@pytest.fixture
def my_nets(tmp_path):
  path = tmp_path / 'my_nets.py'
  path.write_text(MY_NETS)
  return str(path)


def _cli(*args, cwd=REPO, env=None) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, '-m', 'cnn_jax.main', *args], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=300)


def _printed_config(result) -> dict[str, str]:
  assert result.returncode == 0, result.stderr[-3000:]
  return dict(line[len('--config.'):].split('=', 1) for line in result.stdout.splitlines())


# --- Bring your own model ------------------------------------------------------------------------

def test_register_model_as_decorator_and_call(registry):
  @models.register_model('tiny', input_shape=(8, 8, 1), family='mine')
  class Tiny(nn.Module):
    num_classes: int
    width: int = 4

    @nn.compact
    def __call__(self, x, train: bool = False):
      return nn.Dense(self.num_classes)(nn.Conv(self.width, (3, 3))(x).mean(axis=(1, 2)))

  assert 'tiny' in models.list_models() and models.input_shape('tiny') == (8, 8, 1)
  assert models.family('tiny') == 'mine' and models.get_model('tiny', num_classes=3).width == 4
  assert models.register_model('tiny2', Tiny) is Tiny and models.input_shape('tiny2') is None
  assert 'width: int = 4' in models.describe('tiny') and 'native input: 8x8x1' in models.describe(
      'tiny')
  assert 'mine: tiny' in models.describe()


def test_a_model_by_module_or_file_path(my_nets, tmp_path, monkeypatch):
  monkeypatch.syspath_prepend(str(tmp_path))
  by_module = models.get_model('my_nets:TinyNet', num_classes=3, width=5)
  by_file = models.get_model(f'{my_nets}:TinyNet', num_classes=3)
  assert (by_module.width, by_file.width) == (5, 8)
  assert models.input_shape(f'{my_nets}:TinyNet') is None
  assert 'width: int = 8' in models.describe(f'{my_nets}:TinyNet')
  with pytest.raises(ConfigError, match="cannot import 'no_such_pkg.nets'"):
    models.get_model('no_such_pkg.nets:Net', num_classes=2)
  with pytest.raises(ConfigError, match="has no 'Nope'"):
    models.get_model(f'{my_nets}:Nope', num_classes=2)
  with pytest.raises(ConfigError, match="Unknown model 'resnet_18'.*resnet18,"):
    models.get_model('resnet_18', num_classes=2)


def test_the_model_contract_is_checked_before_any_compile(registry, tmp_path, data_dir):
  class NoTrain(nn.Module):
    num_classes: int

    @nn.compact
    def __call__(self, x):
      return nn.Dense(self.num_classes)(x.mean(axis=(1, 2)))

  class NoAxisName(nn.Module):
    num_classes: int

    @nn.compact
    def __call__(self, x, train: bool = False):
      x = nn.BatchNorm(use_running_average=not train)(x)
      return nn.Dense(self.num_classes)(x.mean(axis=(1, 2)))

  class NoClasses(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
      return x

  models.register_model('no_train', NoTrain)
  models.register_model('no_axis_name', NoAxisName)
  models.register_model('no_classes', NoClasses)
  cases = [('no_train', {}, 'must take a `train` argument'),
           ('no_axis_name', {'parallel.mode': 'pmap'}, 'has BatchNorm but no `axis_name`'),
           ('no_axis_name', {'compute_dtype': 'bfloat16'}, 'has no `dtype` field'),
           ('no_classes', {}, "takes no num_classes (")]
  for name, extra, message in cases:
    config = digits_config(data_dir, **{'model.name': name, **extra})
    config.model.kwargs = {}
    workdir = tmp_path / name / str(len(extra))
    with pytest.raises(ConfigError, match=re.escape(message)):
      loop.train_and_evaluate(config, str(workdir))
    assert not (workdir / 'checkpoints').exists()
  # The same model without BatchNorm trouble runs in 'jit' mode: the check is the mode's.
  config = digits_config(data_dir, **{'model.name': 'no_axis_name', 'num_steps': 2})
  config.model.kwargs = {}
  assert loop.train_and_evaluate(config, str(tmp_path / 'jit'))['last']['test']['count'] == 400


@pytest.mark.slow
def test_own_model_from_outside_the_checkout_trains_with_one_command(my_nets, tmp_path, data_dir):
  workdir = tmp_path / 'run'
  result = _cli('--config=default', f'--config.model.name={my_nets}:TinyNet',
                '--config.model.kwargs.width=16', f'--config.data.data_dir={data_dir}',
                '--config.num_steps=60', f'--workdir={workdir}', cwd=str(tmp_path))
  assert result.returncode == 0, result.stderr[-3000:]
  final = json.load(open(workdir / 'final_metrics.json'))['last']['test']
  assert final['count'] == 400 and final['accuracy'] > 0.6  # chance is 0.1
  recorded = json.load(open(workdir / 'config.json'))['model']
  assert recorded == {'name': f'{my_nets}:TinyNet', 'kwargs': {'width': 16}}
  log = result.stderr
  # default.py's widths belong to simple_cnn: dropped, and said so.
  assert 'Dropping config.model.kwargs widths' in log
  devices = jax.device_count()  # conftest's forced host devices reach the child too
  assert f'Devices: {devices} x cpu (cpu) over 1 process(es), {devices} local' in log
  assert f"parallel mode 'jit'; batch 64 global, {64 // devices} per device" in log
  params = 16 * 9 + 16 + 2 * 16 + 4 * 4 * 16 * 10 + 10
  macs = 8 * 8 * 16 * 9 + 4 * 4 * 16 * 10
  assert f'{params:,} parameters, {macs:,} multiply-adds per 8x8x1 example' in log
  assert re.search(r'Data digits: train train\[:90%\], val train\[90%:\], test test; \d+ steps per '
                   r'epoch, 60 steps in all; workdir .*, fresh start', log)


# --- Any field from the command line -------------------------------------------------------------

@pytest.mark.slow
def test_any_model_field_is_a_flag_with_its_type():
  printed = _printed_config(_cli('--config.model.kwargs.dropout=0.1',
                                 '--config.model.kwargs.widths=(8,16)',
                                 '--config.model.kwargs.widths=4,8', '--config.data.mean=(0.1,)',
                                 '--config.data.mean=(0.2,)', '--print_config'))
  assert printed['model.kwargs.dropout'] == '0.1'
  assert printed['model.kwargs.widths'] == '(4, 8)'  # the last one given wins
  assert printed['data.mean'] == '(0.2,)'
  typed = models.resolve_kwargs('simple_cnn', {}, {'dropout': 0, 'widths': [4]})[0]
  assert typed == {'dropout': 0.0, 'widths': (4,)} and isinstance(typed['dropout'], float)
  result = _cli('--config.model.kwargs.dropuot=0.1', '--print_config')
  assert result.returncode == 2
  assert ("Model 'simple_cnn' has no field dropuot; its fields are widths, kernel_size, dropout, "
          'axis_name, dtype') in result.stderr
  result = _cli('--config.model.kwargs.kernel_size=3.5', '--print_config')
  assert result.returncode == 2 and 'config.model.kwargs.kernel_size=3.5: expected int' in (
      result.stderr)


def test_switching_the_model_drops_the_old_models_fields():
  result = _cli('--config.model.name=resnet20', '--config.model.kwargs.drop_rate=0.1',
                '--print_config')
  printed = _printed_config(result)
  assert 'Dropping config.model.kwargs widths: resnet20 has no such field' in result.stderr
  assert printed['model.name'] == "'resnet20'" and printed['model.kwargs.drop_rate'] == '0.1'
  assert not any(key.startswith('model.kwargs.widths') for key in printed)
  # From Python, a field the model lacks is an error, never silently dropped.
  config = default.get_config()
  config.model.name = 'resnet20'
  with pytest.raises(ConfigError, match="Model 'resnet20' has no field widths; its fields are "
                                        'stage_sizes, block, width'):
    loop.validate(config)


def test_print_config_lists_every_field_and_help_points_to_it():
  printed = _printed_config(_cli('--config=cifar10_resnet18', '--config.optim.lr=0.2',
                                 '--print_config'))
  assert printed['optim.lr'] == '0.2' and printed['model.name'] == "'resnet18_cifar'"
  assert {'compute_dtype', 'resume', 'data.augment.ops', 'checkpoint.keep'} <= set(printed)
  helpfull = _cli('--helpfull')
  assert '--print_config' in helpfull.stdout and 'launch.sh models' in helpfull.stdout
  launcher = subprocess.run(['./launch.sh', 'help'], cwd=REPO, capture_output=True, text=True,
                            timeout=600)
  assert '--print_config' in launcher.stdout and 'models [NAME]' in launcher.stdout


def test_experiments_import_and_run_by_name_outside_the_checkout(tmp_path):
  code = 'import experiments.cifar10_resnet18 as e; print(e.get_config().model.name)'
  result = subprocess.run([sys.executable, '-c', code], cwd=str(tmp_path), capture_output=True,
                          text=True, timeout=120)
  assert result.stdout.strip() == 'resnet18_cifar', result.stderr
  printed = _printed_config(_cli('--config=mnist1d_cnn', '--print_config', cwd=str(tmp_path)))
  assert printed['data.name'] == "'mnist1d'"


def test_a_bucket_workdir_is_refused_and_a_bucket_data_dir_reaches_tfds_untouched(tmp_path,
                                                                                 data_dir):
  with pytest.raises(ConfigError, match='gcsfuse'):
    loop.train_and_evaluate(digits_config(data_dir), 'gs://bucket/run')
  assert not os.path.exists('gs:')
  # TFDS itself opens the bucket; without its GCS client installed it says so, naming the path.
  with pytest.raises(ImportError, match=r"'data_dir': 'gs://no-such-bucket/tfds'.*install gcsfs"):
    sources.load('mnist', 'train', 'gs://no-such-bucket/tfds')


# --- Mixed precision -----------------------------------------------------------------------------

def _abstract_step(compute_dtype: str):
  config = digits_config('unused', compute_dtype=compute_dtype)
  mesh = parallel.make_mesh()
  schedule = optim.learning_rate(config.optim, 10, 100)
  tx = optim.create(config.optim, schedule)
  model = loop.build_model(config, 10)
  state = jax.eval_shape(loop.state_initializer(model, tx, (8, 8, 1), config))
  batch = {'image': jax.ShapeDtypeStruct((32, 8, 8, 1), jnp.float32),
           'label': jax.ShapeDtypeStruct((32,), jnp.int32)}
  step = steps.make_train_step(model, tx, schedule, config, mesh)
  return step, state, batch


@pytest.mark.parametrize('compute_dtype', ['bfloat16', 'float16'])
def test_mixed_precision_computes_in_half_and_keeps_float32_state_and_loss(compute_dtype):
  step, state, batch = _abstract_step(compute_dtype)
  new_state, logs = jax.eval_shape(step, state, batch)
  leaves = jax.tree_util.tree_leaves((new_state.params, new_state.batch_stats,
                                      new_state.opt_state))
  assert {leaf.dtype for leaf in leaves if jnp.issubdtype(leaf.dtype, jnp.floating)} == {
      jnp.dtype(jnp.float32)}
  assert logs['loss'].dtype == jnp.float32
  short = {'bfloat16': 'bf16', 'float16': 'f16'}[compute_dtype]
  with conv_form.use('xla'):  # GPUs' and TPUs' form: every convolution and product in half
    text = _abstract_step(compute_dtype)[0].lower(state, batch).as_text()
  products = re.findall(r'stablehlo.(?:convolution|dot_general).*', text)
  assert products and all(f'x{short}>' in c for c in products)
  # On CPUs, where XLA multiplies half floats in float32, the convolutions convert to float32
  # themselves (so that the CPU rules take them) and their outputs back to half.
  text = step.lower(state, batch).as_text()
  products = re.findall(r'stablehlo.dot_general .*', text)
  # The first convolution (one input channel: its kernel times the taps' planes, 3 * 3 of
  # 32 * 8 * 8 positions), and its output back; the classifier's product stays in half.
  assert any('(tensor<8x9xf32>, tensor<9x2048xf32>)' in c for c in products)
  assert f'(tensor<32x8x8x8xf32>) -> tensor<32x8x8x8x{short}>' in text
  assert any(f'(tensor<32x16x{short}>, tensor<16x10x{short}>)' in c for c in products)
  # The softmax cross-entropy: its log-sum-exp runs on float32 logits.
  assert re.search(r'stablehlo.exponential .*tensor<32x10xf32>', text)
  assert ('loss_scale' in logs) == (compute_dtype == 'float16')


def test_float16_skips_an_overflowing_step_and_halves_the_scale(data_dir):
  config = digits_config(data_dir, compute_dtype='float16')
  mesh = parallel.make_mesh()
  schedule = optim.learning_rate(config.optim, 10, 100)
  tx = optim.create(config.optim, schedule)
  model = loop.build_model(config, 10)
  state = jax.jit(loop.state_initializer(model, tx, (8, 8, 1), config))()
  # A scale no float16 gradient survives: every gradient overflows.
  state = state.replace(dynamic_scale=state.dynamic_scale.replace(
      scale=jnp.asarray(3e38, jnp.float32)))
  rng = np.random.default_rng(0)
  batch = jax.device_put({'image': rng.standard_normal((32, 8, 8, 1), np.float32),
                          'label': rng.integers(0, 10, 32).astype(np.int32)},
                         parallel.batch_sharded(mesh))
  before = jax.device_get(state.params)
  step = steps.make_train_step(model, tx, schedule, config, mesh)
  state, logs = step(state, batch)
  jax.tree_util.tree_map(np.testing.assert_array_equal, before, jax.device_get(state.params))
  assert float(state.dynamic_scale.scale) == pytest.approx(1.5e38, rel=1e-6)
  assert int(state.step) == 1 and np.isfinite(float(logs['loss']))
  # At a sane scale the next step applies.
  state = state.replace(dynamic_scale=state.dynamic_scale.replace(
      scale=jnp.asarray(2.0**10, jnp.float32)))
  state, _ = step(state, batch)
  assert not np.array_equal(jax.device_get(state.params)['Dense_0']['kernel'],
                            before['Dense_0']['kernel'])


@pytest.mark.slow
def test_bfloat16_default_experiment_reaches_the_float32_accuracy(tmp_path, data_dir):
  accuracy = {}
  for dtype in ('float32', 'bfloat16'):
    config = default.get_config()
    config.data.data_dir, config.compute_dtype = data_dir, dtype
    final = loop.train_and_evaluate(config, str(tmp_path / dtype))
    accuracy[dtype] = final['last']['test']['accuracy']
  assert accuracy['float32'] >= 0.98
  # At most 2 of the 400 test digits fewer (more is fine: rounding can help as well as hurt).
  assert round(400 * (accuracy['float32'] - accuracy['bfloat16'])) <= 2, accuracy


@pytest.mark.slow
def test_float16_resumes_and_refuses_a_resume_in_another_precision(tmp_path, data_dir):
  workdir = str(tmp_path / 'run')
  loop.train_and_evaluate(digits_config(data_dir, compute_dtype='float16'), workdir)
  metrics = loop.train_and_evaluate(digits_config(data_dir, compute_dtype='float16',
                                                  num_steps=9), workdir)
  assert metrics['last']['test']['count'] == 400
  lines = [json.loads(l) for l in open(os.path.join(workdir, 'metrics.jsonl'))]
  assert [l['step'] for l in lines if l['split'] == 'train'] == [3, 6, 9]
  assert all(l['loss_scale'] > 0 for l in lines if l['split'] == 'train')
  with pytest.raises(ConfigError, match="compute_dtype: 'float16' -> 'float32'"):
    loop.train_and_evaluate(digits_config(data_dir, num_steps=12), workdir)


# --- Accelerator set-up --------------------------------------------------------------------------

def test_launcher_refuses_an_unknown_accelerator():
  result = subprocess.run(['./launch.sh', 'setup', '--cuda'], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
  assert result.returncode == 2
  assert "Unknown setup flag '--cuda': expected --gpu (CUDA 12), --cuda13 or --tpu." in (
      result.stderr)


@pytest.mark.slow
def test_accelerator_extras_resolve_against_the_lock(tmp_path):
  """What `./launch.sh setup --gpu / --cuda13 / --tpu` installs resolves with the pinned JAX
  (metadata only: nothing is downloaded or installed)."""
  report = tmp_path / 'report.json'
  result = subprocess.run(
      [sys.executable, '-m', 'pip', 'install', '--dry-run', '--quiet', '--ignore-installed',
       '-c', 'requirements.lock', '--report', str(report),
       'jax[cuda12]', 'jax[cuda13]', 'jax[tpu]'], cwd=REPO, capture_output=True, text=True,
      timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  pinned = next(line.split('==')[1] for line in open(os.path.join(REPO, 'requirements.lock'))
                if line.startswith('jax=='))
  installed = {i['metadata']['name']: i['metadata']['version']
               for i in json.load(open(report))['install']}
  pinned = pinned.strip()
  assert installed['jax'] == installed['jax-cuda12-plugin'] == installed['jax-cuda13-plugin'] == (
      pinned)
  assert 'libtpu' in installed
  setup_cfg = open(os.path.join(REPO, 'setup.cfg')).read()
  for extra, wheel in (('gpu', 'jax[cuda12]'), ('cuda13', 'jax[cuda13]'), ('tpu', 'jax[tpu]')):
    assert re.search(rf'^{extra} =\n    {re.escape(wheel)}', setup_cfg, re.M)
