"""docs/extending.md, done by a user outside the package: one module of theirs adds a model, a
dataset, an augmentation and a metric, each one definition and one registration, and an
experiment file of theirs trains with all four from the command line; an analysis method of
theirs is a plain function of the opened run."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.test_train import REPO

MY_PARTS = '''
import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import tensorflow_datasets as tfds

from cnn_jax.data import augment, register_dataset
from cnn_jax.models import register_model
from cnn_jax.train.metrics import register_metric


@register_model('stripes_net', input_shape=(8, 8, 1), classes=2)
class StripesNet(nn.Module):
  num_classes: int
  width: int = 4

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.relu(nn.Conv(self.width, (3, 3))(x))
    return nn.Dense(self.num_classes)(x.mean(axis=(1, 2)))


@register_dataset('stripes')
class Stripes(tfds.core.GeneratorBasedBuilder):
  """8x8 images of horizontal (0) or vertical (1) stripes under noise."""
  VERSION = tfds.core.Version('1.0.0')

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        'image': tfds.features.Tensor(shape=(8, 8, 1), dtype=np.uint8),
        'label': tfds.features.ClassLabel(num_classes=2)}))

  def _split_generators(self, dl_manager):
    return {'train': self._generate_examples(400, 0), 'test': self._generate_examples(100, 1)}

  def _generate_examples(self, count, seed):
    rng = np.random.default_rng(seed)
    for index in range(count):
      label = index % 2
      stripes = np.tile((np.arange(8) % 2)[:, None], (1, 8))
      image = stripes.T if label else stripes
      noisy = np.clip(image * 200 + rng.normal(0, 40, (8, 8)), 0, 255)
      yield index, {'image': noisy.astype(np.uint8)[..., None], 'label': label}


@augment.register('invert', 'batch')
def invert(x, rng, params):
  """Inverts a share ``params.invert_prob`` of the examples (stripes stay stripes)."""
  chosen = rng.random(x.shape[0]) < params.invert_prob
  out = x.copy()
  out[chosen] = 255 - x[chosen]
  return out


@register_metric('error_rate', labels='example')
def error_rate(logits, labels):
  return (logits.argmax(-1) != labels).astype(jnp.float32)
'''

MY_EXPERIMENT = '''
import my_parts  # registers the model, the dataset, the augmentation and the metric
from experiments import base


def get_config():
  config = base.get_config()
  config.data.name = 'stripes'
  config.data.augment.ops = ('invert',)
  config.data.augment.invert_prob = 0.5  # the augmentation's own parameter
  config.model.name = 'stripes_net'
  config.batch_size, config.eval_batch_size = 32, 48
  config.num_steps, config.eval_every, config.checkpoint.every, config.log_every = 60, 20, 20, 20
  config.optim.lr = 0.1
  config.checkpoint.best_metric, config.checkpoint.best_mode = 'error_rate', 'min'
  return config
'''


@pytest.mark.slow
def test_a_model_dataset_augmentation_and_metric_from_outside_train_from_the_command_line(
    tmp_path):
  (tmp_path / 'my_parts.py').write_text(MY_PARTS, encoding='utf-8')
  (tmp_path / 'my_experiment.py').write_text(MY_EXPERIMENT, encoding='utf-8')
  result = subprocess.run(
      [os.path.join(REPO, 'launch.sh'), '--config=my_experiment.py', '--workdir=runs/stripes',
       f'--config.data.data_dir={tmp_path / "tfds"}'], cwd=tmp_path, capture_output=True,
      text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  final = json.load(open(tmp_path / 'runs' / 'stripes' / 'final_metrics.json'))
  for role, count in (('val', 40), ('test', 100)):
    metrics = final['last'][role]
    assert metrics['count'] == count
    assert metrics['error_rate'] == 1 - metrics['accuracy']  # the metric, computed by name
  assert final['best_by'] == 'val error_rate (min)' and final['last']['test']['accuracy'] > 0.9
  assert 'step 20/60: val accuracy' in result.stderr and 'error_rate' in result.stderr

  # The run opens for analysis like any other; an analysis method is a function of its parts.
  check = subprocess.run([sys.executable, '-c', '''
import numpy as np
import my_parts
from cnn_jax import analysis

def stripe_energy(model, variables, x):
    """The first layer's mean absolute response: a user's own analysis method."""
    return np.abs(analysis.feature_maps(model, variables, x)['Conv_0']).mean()

run = analysis.load_run('runs/stripes')
test = run.predict('test')
print(stripe_energy(run.model, run.variables, test['image'][:8]), run.evaluate('test')['error_rate'])
'''], cwd=tmp_path, capture_output=True, text=True, timeout=300)
  assert check.returncode == 0, check.stderr[-3000:]
  energy, error = map(float, check.stdout.split())
  assert energy > 0 and np.isclose(error, final['last']['test']['error_rate'])
