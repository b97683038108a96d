"""Gradient accumulation: a step over K sequential parts of a batch is the step over the whole
batch (exactly, for a model without BatchNorm), on every device of the mesh; mixing runs in it."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_jax.train import loop, optim, parallel, steps
from experiments import base


class Tiny(nn.Module):
  num_classes: int = 3

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.relu(nn.Conv(4, (3, 3))(x))
    return nn.Dense(self.num_classes)(x.reshape(x.shape[0], -1))


def _one_step(parts: int, mode: str = 'jit', ops=()):
  config = base.get_config()
  config.grad_accum_steps, config.parallel.mode = parts, mode
  config.data.augment.ops = ops
  config.optim.schedule, config.optim.lr = 'constant', 0.5
  mesh = parallel.make_mesh()
  model = Tiny()
  schedule = optim.learning_rate(config.optim, 1, 1)
  tx = optim.create(config.optim, schedule)
  state = jax.jit(loop.state_initializer(model, tx, (6, 6, 2), config),
                  out_shardings=parallel.replicated(mesh))()
  rng = np.random.default_rng(0)
  batch = {'image': rng.normal(size=(16, 6, 6, 2)).astype(np.float32),
           'label': rng.integers(0, 3, 16).astype(np.int32)}
  batch = jax.device_put(batch, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data')))
  state, logs = steps.make_train_step(model, tx, schedule, config, mesh)(state, batch)
  return jax.device_get(state.params), jax.device_get(logs)


@pytest.mark.parametrize('mode', ['jit', 'pmap'])
def test_k_accumulated_parts_equal_one_step_of_the_whole_batch(mode):
  whole, whole_logs = _one_step(1, mode)
  accumulated, logs = _one_step(4, mode)  # 16 examples on 4 devices: 4 parts of 1 per device
  for a, b in zip(jax.tree_util.tree_leaves(whole), jax.tree_util.tree_leaves(accumulated)):
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)
  assert logs['loss'] == pytest.approx(whole_logs['loss'], rel=1e-5)
  assert logs['accuracy'] == pytest.approx(whole_logs['accuracy'])
  mixed, _ = _one_step(2, mode, ops=("mixup",))  # mixing composes with the parts
  assert not np.allclose(jax.tree_util.tree_leaves(mixed)[0],
                         jax.tree_util.tree_leaves(whole)[0])


def test_parts_that_do_not_divide_a_devices_batch_fail_before_compiling(tmp_path, data_dir):
  from tests.test_train import digits_config  # pylint: disable=g-import-not-at-top
  config = digits_config(data_dir, grad_accum_steps=3)  # 32 over 4 devices: 8 each
  with pytest.raises(ValueError, match='grad_accum_steps=3 must divide each device.s batch \\(8'):
    loop.train_and_evaluate(config, str(tmp_path / 'run'))
  with pytest.raises(ValueError, match='float16'):
    loop.train_and_evaluate(digits_config(data_dir, grad_accum_steps=2, compute_dtype='float16'),
                            str(tmp_path / 'run'))
