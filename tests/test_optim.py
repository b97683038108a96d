"""Schedules, weight-decay mask, reduce-on-plateau, EMA and the max-norm constraint in training."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_jax.train import checkpoint, loop, optim
from experiments import base
from tests.test_train import digits_config


def _optim(**overrides):
  config = base.get_config().optim
  for key, value in overrides.items():
    config[key] = value
  return config


def test_schedules():
  step = optim.learning_rate(_optim(schedule='step', lr=0.1, decay_epochs=(2, 3)), 10, 50)
  assert [float(step(s)) for s in (0, 19, 20, 29, 30)] == pytest.approx(
      [0.1, 0.1, 0.01, 0.01, 0.001])
  cosine = optim.learning_rate(_optim(schedule='cosine', lr=0.1), 10, 100)
  assert float(cosine(0)) == pytest.approx(0.1) and float(cosine(50)) == pytest.approx(0.05)
  assert float(cosine(100)) == pytest.approx(0.0, abs=1e-9)
  warm = optim.learning_rate(_optim(schedule='warmup_cosine', lr=0.1, warmup_epochs=1), 10, 110)
  assert float(warm(0)) == 0.0 and float(warm(5)) == pytest.approx(0.05)
  assert float(warm(10)) == pytest.approx(0.1) and float(warm(60)) == pytest.approx(0.05)
  assert float(optim.learning_rate(_optim(schedule='plateau', lr=0.1), 10, 100)(99)) == 0.1
  with pytest.raises(ValueError, match="schedule='cosin'"):
    optim.validate(_optim(schedule='cosin'))


def test_weight_decay_skips_biases_and_norms():
  params = {'Conv_0': {'kernel': jnp.ones((3, 3, 1, 2)), 'bias': jnp.ones(2)},
            'BatchNorm_0': {'scale': jnp.ones(2), 'bias': jnp.ones(2)}}
  tx = optim.create(_optim(name='sgd', lr=1.0, momentum=0.0, weight_decay=0.1),
                    optim.learning_rate(_optim(schedule='constant', lr=1.0), 1, 1))
  zero = jax.tree_util.tree_map(jnp.zeros_like, params)
  updates, _ = tx.update(zero, tx.init(params), params)
  assert float(updates['Conv_0']['kernel'].max()) == pytest.approx(-0.1)  # -lr * wd * w
  for leaf in (updates['Conv_0']['bias'], updates['BatchNorm_0']['scale'],
               updates['BatchNorm_0']['bias']):
    assert float(jnp.abs(leaf).max()) == 0.0


def test_reduce_on_plateau():
  config = _optim(schedule='plateau', plateau_patience=1, decay_factor=0.1, plateau_mode='max')
  state = loop.TrainState(step=0, params={}, batch_stats={}, opt_state=(), ema_params={},
                          lr_scale=jnp.ones(()), plateau_best=jnp.full((), jnp.nan),
                          plateau_wait=jnp.zeros((), jnp.int32))
  scales = []
  for accuracy in (0.5, 0.6, 0.6, 0.6, 0.7, 0.7, 0.7):
    state = optim.plateau_update(state, {'accuracy': accuracy}, config)
    scales.append(round(float(state.lr_scale), 6))
  # Two evaluations without improvement (> patience 1) divide the lr by 10; the count restarts.
  assert scales == [1.0, 1.0, 1.0, 0.1, 0.1, 0.1, 0.01]
  unchanged = optim.plateau_update(state, {'accuracy': 0.0}, _optim(schedule='cosine'))
  assert unchanged is state


@pytest.mark.slow
def test_ema_and_max_norm_in_a_real_run(tmp_path, data_dir):
  workdir = str(tmp_path / 'run')
  config = digits_config(data_dir, **{'ema_decay': 0.5, 'optim.max_norm': 0.5,
                                      'optim.lr': 0.5, 'num_steps': 3})
  loop.train_and_evaluate(config, workdir)
  state = checkpoint.manager(workdir, read_only=True).restore(3)
  kernels = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(state['params'])
             if path[-1].key == 'kernel']
  for kernel in kernels:
    norms = np.sqrt((np.asarray(kernel) ** 2).reshape(-1, kernel.shape[-1]).sum(0))
    assert norms.max() <= 0.5 + 1e-5
  # The EMA trails the parameters (with ema_decay=0 it would equal them).
  ema, params = state['ema_params'], state['params']
  assert jax.tree_util.tree_structure(ema) == jax.tree_util.tree_structure(params)
  diffs = jax.tree_util.tree_leaves(jax.tree_util.tree_map(lambda a, b: float(np.abs(a - b).max()),
                                                           ema, params))
  assert max(diffs) > 0


def test_rng_streams_are_named_and_follow_the_step():
  from cnn_jax.train import steps  # pylint: disable=g-import-not-at-top
  at = lambda step: {k: jax.random.key_data(v).tolist() for k, v in
                     steps._rngs(steps._step_key(0, step, per_device=False)).items()}  # pylint: disable=protected-access
  assert set(at(0)) == {'dropout', 'stochastic_depth'}
  assert at(0)['dropout'] != at(0)['stochastic_depth']
  assert at(0) != at(1) and at(5) == at(5)  # fold_in(step): a resumed run draws the same keys


def test_the_learning_rate_scales_with_the_global_batch():
  assert optim.peak_lr(_optim(lr=0.1, lr_scaling='none'), 1024) == pytest.approx(0.1)
  assert optim.peak_lr(_optim(lr=0.1, lr_scaling='linear'), 1024) == pytest.approx(0.4)
  assert optim.peak_lr(_optim(lr=0.1, lr_scaling='sqrt', lr_base_batch=64), 1024) == (
      pytest.approx(0.4))
  schedule = optim.learning_rate(_optim(lr=0.1, lr_scaling='linear', schedule='constant'), 10, 50,
                                 batch_size=512)
  assert float(schedule(7)) == pytest.approx(0.2)
  with pytest.raises(ValueError, match="lr_scaling='linaer'"):
    optim.validate(_optim(lr_scaling='linaer'))


@pytest.mark.parametrize('schedule', ['constant', 'step', 'cosine', 'plateau'])
def test_warmup_ramps_up_before_every_schedule(schedule):
  lr = optim.learning_rate(_optim(schedule=schedule, lr=0.4, warmup_epochs=2,
                                  decay_epochs=(5,)), 10, 100)
  assert [float(lr(s)) for s in (0, 10)] == pytest.approx([0.0, 0.2])
  assert float(lr(20)) == pytest.approx(0.4)  # the peak once warm
  if schedule == 'step':  # decay epochs still count from the start of training
    assert [float(lr(s)) for s in (49, 50)] == pytest.approx([0.4, 0.04])
  if schedule == 'cosine':  # decays over the steps after the warmup, to zero at the end
    assert float(lr(60)) == pytest.approx(0.2) and float(lr(100)) == pytest.approx(0.0, abs=1e-9)


def test_lars_scales_each_kernel_update_by_its_trust_ratio_and_leaves_biases_plain():
  params = {'Conv_0': {'kernel': jnp.full((3, 3, 1, 2), 2.0), 'bias': jnp.ones(2)}}
  grads = {'Conv_0': {'kernel': jnp.full((3, 3, 1, 2), 0.5), 'bias': jnp.full(2, 0.5)}}
  config = _optim(name='lars', lr=1.0, momentum=0.0, weight_decay=0.01, trust_coefficient=0.001)
  tx = optim.create(config, optim.learning_rate(_optim(schedule='constant', lr=1.0), 1, 1))
  updates, _ = tx.update(grads, tx.init(params), params)
  kernel, weight = updates['Conv_0']['kernel'], params['Conv_0']['kernel']
  # -lr * trust * |w| / |g + wd w| * (g + wd w): its norm is lr * trust * |w|.
  assert float(jnp.linalg.norm(kernel)) == pytest.approx(1e-3 * float(jnp.linalg.norm(weight)))
  np.testing.assert_allclose(updates['Conv_0']['bias'], -grads['Conv_0']['bias'])  # plain, undecayed


def test_layer_decay_scales_each_layers_learning_rate_and_trainable_freezes_the_rest():
  config = base.get_config()
  config.optim.name, config.optim.momentum, config.optim.layer_decay = 'sgd', 0.0, 0.5
  params = {'stem': {'kernel': jnp.ones((2,))}, 'block': {'kernel': jnp.ones((2,))},
            'head': {'kernel': jnp.ones((2,)), 'bias': jnp.ones((2,))}}
  tx = optim.create(config.optim, lambda step: 1.0, layers=['stem', 'block', 'head'])
  updates, _ = tx.update(params, tx.init(params), params)
  assert [float(updates[name]['kernel'][0]) for name in ('stem', 'block', 'head')] == [
      -0.25, -0.5, -1.0]  # lr * decay^(L-1-l), the last layer at the full rate
  config.optim.layer_decay, config.optim.trainable = 1.0, '^head/kernel'
  tx = optim.create(config.optim, lambda step: 1.0)
  updates, _ = tx.update(params, tx.init(params), params)
  assert float(updates['head']['kernel'][0]) == -1.0
  assert all(float(jnp.abs(updates[name][leaf]).max()) == 0.0
             for name, leaf in (('stem', 'kernel'), ('block', 'kernel'), ('head', 'bias')))
  config.optim.trainable = 'conv'
  with pytest.raises(Exception, match='matches no parameter'):
    tx = optim.create(config.optim, lambda step: 1.0)
    tx.init(params)
  config.optim.trainable, config.optim.layer_decay = '', 0.0
  with pytest.raises(Exception, match='layer_decay'):
    optim.validate(config.optim)
