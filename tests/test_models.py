"""The model zoo: every registered model's output shape, published parameter and multiply-add
counts (from `jax.eval_shape` + `summarize`, so the big models cost no memory), the features each
paper describes, and one real training step for a tiny instance of every family."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from cnn_jax import arithmetic, models
from cnn_jax import layers as L
from cnn_jax.layers import convolve
from cnn_jax.models import googlenet
from cnn_jax.models.wavenet import CausalStack
from cnn_jax.train import losses, loop, optim, parallel, steps
from experiments import base

DENSE = {'fcn', 'segnet', 'unet', 'dilated_context'}

# torchvision / Keras reference counts (1000 classes), and GoogLeNet's BVLC Caffe model.
PUBLISHED_PARAMS = {
    'alexnet': 62_378_344, 'vgg11': 132_863_336, 'vgg13': 133_047_848, 'vgg16': 138_357_544,
    'vgg19': 143_667_240, 'vgg11_bn': 132_868_840, 'vgg13_bn': 133_053_736,
    'vgg16_bn': 138_365_992, 'vgg19_bn': 143_678_248, 'googlenet': 6_998_552,
    'resnet18': 11_689_512, 'resnet34': 21_797_672, 'resnet50': 25_557_032,
    'resnet101': 44_549_160, 'resnet152': 60_192_808, 'densenet121': 7_978_856,
    'densenet169': 14_149_480, 'densenet201': 20_013_928, 'mobilenet_v1': 4_231_976,
    'efficientnet_b0': 5_288_548, 'efficientnet_b1': 7_794_184, 'efficientnet_b2': 9_109_994,
    'efficientnet_b3': 12_233_232, 'resnext50_32x4d': 25_028_904, 'wide_resnet50_2': 68_883_240,
    'mobilenet_v2': 3_504_872, 'mobilenet_v3_large': 5_483_032, 'efficientnet_v2_s': 21_458_488,
    'regnet_y_400mf': 4_344_144, 'regnet_y_8gf': 39_381_472, 'convnext_tiny': 28_589_128,
    'convnext_small': 50_223_688, 'convnext_base': 88_591_464,
}
# Published multiply-adds in G (papers; torchvision for VGG-11/13 and DenseNet), with overrides.
PUBLISHED_GMACS = [
    ('resnet18', {}, 1.8), ('resnet34', {}, 3.6), ('resnet50', {'stride_in_3x3': False}, 3.8),
    ('resnet50', {}, 4.1), ('resnet101', {'stride_in_3x3': False}, 7.6),
    ('resnet152', {'stride_in_3x3': False}, 11.3), ('vgg11', {}, 7.61), ('vgg13', {}, 11.31),
    ('vgg16', {}, 15.5), ('vgg19', {}, 19.6), ('googlenet', {}, 1.586),
    ('densenet121', {}, 2.83), ('densenet169', {}, 3.36), ('densenet201', {}, 4.29),
    ('mobilenet_v1', {}, 0.569), ('efficientnet_b0', {}, 0.39), ('efficientnet_b1', {}, 0.70),
    ('efficientnet_b2', {}, 1.0), ('efficientnet_b3', {}, 1.8),
    # torchvision's figures for its weights (at the registered input; EfficientNetV2-S at 384).
    ('alexnet', {'variant': 'torchvision'}, 0.714), ('resnext50_32x4d', {}, 4.23),
    ('wide_resnet50_2', {}, 11.398), ('mobilenet_v2', {}, 0.301),
    ('mobilenet_v3_large', {}, 0.217), ('efficientnet_v2_s', {}, 8.366),
    ('regnet_y_400mf', {}, 0.402), ('regnet_y_8gf', {}, 8.473), ('convnext_tiny', {}, 4.456),
    ('convnext_small', {}, 8.684), ('convnext_base', {}, 15.355),
]


def _params(tree) -> int:
  return sum(x.size for x in jax.tree_util.tree_leaves(tree))


def _abstract_variables(model, shape):
  return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape)))


def _gmacs(model, shape) -> float:
  return arithmetic.summarize(model, shape, print_fn=None).total_macs / 1e9


@pytest.mark.parametrize('name', models.list_models())
def test_every_model_maps_its_native_input_to_logits(name):
  model = models.get_model(name, num_classes=7)
  shape = (2, *models.input_shape(name))
  out = jax.eval_shape(lambda: model.init_with_output(jax.random.key(0), jnp.zeros(shape))[0])
  dense = models.family(name) in DENSE
  assert out.shape == ((*shape[:-1], 7) if dense else (2, 7))


@pytest.mark.parametrize('name', sorted(PUBLISHED_PARAMS))
def test_published_parameter_counts(name):
  model = models.get_model(name, num_classes=1000)
  variables = _abstract_variables(model, (1, *models.input_shape(name)))
  assert _params(variables['params']) == PUBLISHED_PARAMS[name]


@pytest.mark.parametrize('name,overrides,published', PUBLISHED_GMACS)
def test_published_multiply_adds_within_3_percent(name, overrides, published):
  model = models.get_model(name, num_classes=1000, **overrides)
  assert _gmacs(model, (1, *models.input_shape(name))) == pytest.approx(published, rel=0.03)


@pytest.mark.parametrize('depth,millions', [(20, 0.27), (32, 0.46), (44, 0.66), (56, 0.85),
                                            (110, 1.7)])
def test_cifar_resnets_have_the_papers_parameter_counts(depth, millions):
  variables = _abstract_variables(models.get_model(f'resnet{depth}', num_classes=10),
                                  (1, 32, 32, 3))
  assert _params(variables['params']) / 1e6 == pytest.approx(millions, abs=0.0051 * (
      10 if depth == 110 else 1))  # the paper rounds to 0.01 M (0.1 M for ResNet-110)


@pytest.mark.parametrize('alpha,size,mmacs,millions', [
    (1.0, 224, 569, 4.2), (0.75, 224, 325, 2.6), (0.5, 224, 149, 1.3), (0.25, 224, 41, 0.5),
    (1.0, 192, 418, 4.2), (1.0, 160, 290, 4.2), (1.0, 128, 186, 4.2)])
def test_mobilenet_width_and_resolution_multipliers_match_the_paper(alpha, size, mmacs, millions):
  model = models.get_model('mobilenet_v1', width_multiplier=alpha)
  variables = _abstract_variables(model, (1, size, size, 3))
  assert _params(variables['params']) / 1e6 == pytest.approx(millions, abs=0.051)
  assert _gmacs(model, (1, size, size, 3)) * 1e3 == pytest.approx(mmacs, rel=0.03)


@pytest.mark.slow
def test_where_the_parameters_and_the_work_are():
  alexnet = arithmetic.summarize(models.get_model('alexnet'), (1, 227, 227, 3), print_fn=None)
  conv = sum(row.params for row in alexnet.layers if row.kind == 'Conv')
  assert conv / alexnet.total_params == pytest.approx(0.06, abs=0.005)  # "6% in convolutions"
  vgg = arithmetic.summarize(models.get_model('vgg16'), (1, 224, 224, 3), print_fn=None)
  dense = sum(row.params for row in vgg.layers if row.kind == 'Dense')
  # The notes say 85% in the dense layers; it is 89%.
  assert dense / vgg.total_params == pytest.approx(0.894, abs=0.001)
  # ResNet-152 is deeper than VGG yet cheaper: 11.3 vs 15.5 / 19.6 G multiply-adds.
  cost = {name: _gmacs(models.get_model(name, **kw), (1, 224, 224, 3))
          for name, kw in (('resnet152', {'stride_in_3x3': False}), ('vgg16', {}), ('vgg19', {}))}
  assert cost['resnet152'] < cost['vgg16'] < cost['vgg19']


def test_zfnet_feature_maps_have_the_papers_sizes():
  summary = arithmetic.summarize(models.get_model('zfnet'), (1, 224, 224, 3), print_fn=None)
  sizes = [row.output_shape[1] for row in summary.layers if row.kind == 'Conv']
  assert sizes == [110, 26, 13, 13, 13]
  assert summary.layers[0].receptive_field == (7, 7)


def test_googlenet_inception_outputs_and_auxiliary_heads():
  model = models.get_model('googlenet', num_classes=10)
  channels = [sum(features[i] for i in (0, 2, 4, 5)) for _, features in filter(None,
                                                                                googlenet.MODULES)]
  assert channels == [256, 480, 512, 512, 512, 528, 832, 832, 1024]  # Table 1's output depths
  with_aux = model.clone(aux_heads=True)
  variables = _abstract_variables(with_aux, (1, 224, 224, 3))
  assert {'aux_4a', 'aux_4d'} <= set(variables['params'])
  x = jnp.zeros((2, 224, 224, 3))
  apply = lambda train: jax.eval_shape(lambda v: with_aux.apply(
      v, x, train=train, rngs={'dropout': jax.random.key(0)}), variables)
  assert [y.shape for y in apply(True)] == [(2, 10)] * 3  # logits and the two auxiliary heads
  assert apply(False).shape == (2, 10)


def test_resnet_v1_strides_in_the_1x1_and_v15_in_the_3x3():
  shape = (1, 224, 224, 3)
  v1 = _gmacs(models.get_model('resnet50', stride_in_3x3=False), shape)
  v15 = _gmacs(models.get_model('resnet50'), shape)
  assert v15 > v1  # the 3x3 at full resolution costs 0.23 G more
  same = [_params(_abstract_variables(models.get_model('resnet50', stride_in_3x3=s), shape))
          for s in (True, False)]
  assert same[0] == same[1]


@pytest.mark.slow
def test_plain_highway_and_residual_twins_differ_only_in_the_join():
  shape = (1, 32, 32, 3)
  counts = {name: _abstract_variables(models.get_model(name, num_classes=10), shape)['params']
            for name in ('resnet20', 'plain20', 'highway20')}
  assert _params(counts['plain20']) == _params(counts['resnet20'])  # option A: no parameters
  gates = [k for k in jax.tree_util.tree_leaves_with_path(counts['highway20'])
           if 'gate' in jax.tree_util.keystr(k[0])]
  assert len(gates) == 2 * 9  # a gate kernel and bias in each of the 9 blocks
  x = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
  outputs = {}
  for name in ('resnet20', 'plain20'):
    model = models.get_model(name, num_classes=10)
    outputs[name] = model.apply(model.init(jax.random.key(0), x), x)
  assert not np.allclose(outputs['resnet20'], outputs['plain20'])


@pytest.mark.slow
def test_stochastic_depth_grows_linearly_and_only_acts_in_training():
  model = models.get_model('resnet20', num_classes=10, drop_rate=0.5)
  x = jax.random.normal(jax.random.key(1), (4, 32, 32, 3))
  variables = model.init(jax.random.key(0), x)
  # Away from the zero-initialised last BN scales, so that dropping a branch changes something.
  variables = {**variables, 'params': jax.tree_util.tree_map(lambda p: p + 0.1,
                                                             variables['params'])}
  run = lambda seed: model.apply(variables, x, train=True, mutable=['batch_stats'],
                                 rngs={'stochastic_depth': jax.random.key(seed)})[0]
  assert not np.allclose(run(0), run(1))
  np.testing.assert_array_equal(model.apply(variables, x), model.apply(variables, x))
  rates = []
  model.apply(variables, x, train=True, mutable=['batch_stats'],
              rngs={'stochastic_depth': jax.random.key(0)},
              method=lambda m, *a, **k: _record_drop_rates(m, rates, *a, **k))
  np.testing.assert_allclose(rates, 0.5 * np.arange(1, 10) / 9)


def _record_drop_rates(module, rates, *args, **kwargs):
  def interceptor(next_fun, fargs, fkwargs, context):
    if isinstance(context.module, L.ResidualBlock) and context.method_name == '__call__':
      rates.append(context.module.drop_rate)
    return next_fun(*fargs, **fkwargs)

  with nn.intercept_methods(interceptor):
    return module(*args, **kwargs)


def test_unet_levels_set_depth_context_and_input_constraint():
  summaries = {levels: arithmetic.summarize(models.get_model('unet', num_classes=3, width=4,
                                                             levels=levels), (1, 32, 32, 1),
                                            print_fn=None) for levels in (2, 3, 4)}
  assert summaries[2].total_params < summaries[3].total_params < summaries[4].total_params
  deepest = [max(r.receptive_field[0] for r in s.layers if r.receptive_field)
             for s in summaries.values()]
  assert deepest[0] < deepest[1] < deepest[2]  # each level adds a pooling: more context
  with pytest.raises(ValueError, match='divisible by 8'):
    jax.eval_shape(lambda: models.get_model('unet', levels=4).init(jax.random.key(0),
                                                                   jnp.zeros((1, 36, 36, 1))))


def test_dilated_context_net_keeps_resolution_and_grows_its_field_exponentially():
  model = models.get_model('dilated_context', num_classes=3, width=4, front_layers=0)
  summary = arithmetic.summarize(model, (1, 80, 80, 3), print_fn=None)
  convs = [r for r in summary.layers if r.kind == 'Conv']
  assert all(r.output_shape[1:3] == (80, 80) for r in convs)
  assert convs[-2].receptive_field == (67, 67)  # Yu & Koltun's basic context module
  plain = arithmetic.summarize(model.clone(dilations=(1,) * 7), (1, 80, 80, 3), print_fn=None)
  assert plain.total_params == summary.total_params


@pytest.mark.slow
def test_fcn_variants_fuse_finer_scores_and_upsample_bilinearly_at_init():
  shape = (1, 64, 64, 3)
  small = dict(num_classes=3, width=4, dense_features=8)
  params = {s: _abstract_variables(models.get_model(f'fcn{s}s', **small), shape)['params']
            for s in (32, 16, 8)}
  assert 'score_pool4' not in params[32] and 'score_pool3' not in params[16]
  assert {'score_pool4', 'score_pool3'} <= set(params[8])
  assert params[8]['upsample_to_input']['kernel'].shape == (16, 16, 3, 3)  # x8: k = 2s
  model = models.get_model('fcn16s', **small)
  x = jax.random.normal(jax.random.key(0), shape)
  variables = model.init(jax.random.key(0), x)
  upsample = variables['params']['upsample_to_input']['kernel']
  np.testing.assert_array_equal(upsample, L.bilinear_kernel_init(None, upsample.shape))
  # Zero-initialised skip scores (FCN-16s starts as FCN-32s) that still receive gradient.
  skip = variables['params']['score_pool4']['kernel']
  assert not np.any(skip)
  labels = jnp.zeros((1, 64, 64), jnp.int32)
  grads = jax.grad(lambda p: losses.pixel_cross_entropy(
      model.apply({'params': p}, x), labels).mean())(variables['params'])
  assert np.any(grads['score_pool4']['kernel'])


@pytest.mark.slow
def test_segnet_unpools_with_the_encoders_own_indices(monkeypatch):
  pooled, unpooled = [], []
  pool, unpool = L.max_pool_with_indices, L.max_unpool

  def recording_pool(*args, **kwargs):
    out = pool(*args, **kwargs)
    pooled.append(out[1])
    return out

  def recording_unpool(x, indices, shape):
    unpooled.append(indices)
    return unpool(x, indices, shape)

  monkeypatch.setattr(L, 'max_pool_with_indices', recording_pool)
  monkeypatch.setattr(L, 'max_unpool', recording_unpool)
  model = models.get_model('segnet', num_classes=3, width=4, num_stages=3)
  x = jax.random.normal(jax.random.key(0), (1, 16, 16, 3))
  assert model.init_with_output(jax.random.key(0), x)[0].shape == (1, 16, 16, 3)
  assert len(pooled) == len(unpooled) == 3
  for encoder, decoder in zip(pooled, reversed(unpooled)):
    np.testing.assert_array_equal(encoder, decoder)
  summary = arithmetic.summarize(model, (1, 16, 16, 3), print_fn=None)
  assert 'ConvTranspose' not in {r.kind for r in summary.layers}  # un-pooling learns nothing


@pytest.mark.slow
def test_wavenet_stack_is_causal_and_summarize_reports_its_field():
  trunk = CausalStack(channels=4, skip_channels=4, kernel_size=2, dilations=(1, 2, 4, 8))
  x = jax.random.normal(jax.random.key(0), (1, 40, 1))
  variables = trunk.init(jax.random.key(0), x)
  jac = jax.jacobian(lambda x: trunk.apply(variables, x)[0, :, 0])(x)[:, 0, :, 0]  # [t, s]
  assert not np.any(np.triu(np.asarray(jac), k=1))  # output t never sees input s > t
  assert np.any(np.asarray(jac)[20, 5:20])
  summary = arithmetic.summarize(trunk, (1, 40, 1), print_fn=None)
  assert max(r.receptive_field[0] for r in summary.layers if r.receptive_field) == (
      1 + 1 + (1 + 2 + 4 + 8))  # the causal input conv, then 1 + (k-1) * sum(dilations)


# One tiny instance per family (narrow and, where the family allows, shallow, to compile fast;
# without dropout, so four steps on one batch must lower its loss): (name, overrides, input shape).
TINY = {
    'simple': ('simple_cnn', {'widths': (4, 8)}, (8, 8, 1)),
    'lenet': ('lenet5', {}, (32, 32, 1)),
    'alexnet': ('zfnet', {'widths': (4,) * 5, 'dense_features': 8, 'dropout': 0.0}, (67, 67, 3)),
    'vgg': ('vgg11_bn', {'width': 4, 'dense_features': 8, 'dropout': 0.0}, (32, 32, 3)),
    'googlenet': ('googlenet', {'width_multiplier': 1 / 16, 'aux_heads': True, 'dropout': 0.0,
                                'batch_norm': True}, (96, 96, 3)),
    'resnet': ('resnet50', {'width': 4, 'stage_sizes': (1, 1)}, (32, 32, 3)),
    'densenet': ('densenet121', {'growth_rate': 4, 'init_features': 8, 'block_sizes': (2, 2)},
                 (32, 32, 3)),
    'mobilenet': ('mobilenet_v1', {'width_multiplier': 1 / 8, 'dropout': 0.0}, (64, 64, 3)),
    'efficientnet': ('efficientnet_b0', {'width': 0.25, 'depth': 0.1, 'dropout': 0.0,
                                         'drop_rate': 0.0}, (32, 32, 3)),
    'fcn': ('fcn8s', {'width': 4, 'dense_features': 8, 'dropout': 0.0, 'batch_norm': True},
            (32, 32, 3)),
    'segnet': ('segnet', {'width': 4, 'num_stages': 3}, (16, 16, 3)),
    'unet': ('unet', {'width': 4, 'levels': 3}, (16, 16, 1)),
    'dilated_context': ('dilated_context', {'width': 4}, (16, 16, 3)),
    'wavenet': ('wavenet', {'channels': 4, 'skip_channels': 4}, (40, 1)),
    'deepbind': ('deepbind', {'num_motifs': 4, 'hidden': 4, 'dropout': 0.0}, (101, 4)),
    'convnext': ('convnext_tiny', {'depths': (1, 1), 'widths': (8, 16), 'drop_rate': 0.0},
                 (32, 32, 3)),
    'regnet': ('regnet_y_400mf', {'depths': (1, 1), 'widths': (8, 16)}, (32, 32, 3)),
}


def test_every_family_has_a_tiny_instance():
  assert {models.family(name) for name in models.list_models()} == set(TINY)


@pytest.mark.slow
@pytest.mark.parametrize('family', sorted(TINY))
def test_one_real_training_step_per_family(family):
  name, overrides, shape = TINY[family]
  dense = family in DENSE
  config = base.get_config()
  config.model.name, config.model.kwargs = name, overrides
  config.loss = 'pixel_cross_entropy' if dense else 'softmax_cross_entropy'
  config.optim.name, config.optim.lr, config.optim.schedule = 'adam', 3e-3, 'constant'
  config.batch_size = 4
  mesh = parallel.make_mesh()
  model = loop.build_model(config, num_classes=3)
  schedule = optim.learning_rate(config.optim, 10, 10)
  tx = optim.create(config.optim, schedule)
  state = jax.jit(loop.state_initializer(model, tx, shape, config))()
  rng = np.random.default_rng(0)
  images = rng.normal(size=(4, *shape)).astype(np.float32)
  # Per-pixel labels that a net can fit: the sign of the first channel, in classes 0 and 2.
  labels = 2 * (images[..., 0] > 0) if dense else rng.integers(0, 3, 4)
  batch = {'image': images, 'label': labels.astype(np.int32)}
  batch = jax.device_put(batch, NamedSharding(mesh, PartitionSpec('data')))
  train_step = steps.make_train_step(model, tx, schedule, config, mesh)
  losses_seen = []
  # XLA's own convolutions compile several times faster than the matmul forms of big graphs
  # (GoogLeNet: 40 s against 140 s); test_convolve_impls shows the forms compute the same.
  with convolve.use('xla'):
    for _ in range(4):  # the same batch: the loss must go down
      state, logs = train_step(state, batch)
      losses_seen.append(float(logs['loss']))
  assert np.all(np.isfinite(losses_seen)) and float(logs['grad_norm']) > 0
  assert losses_seen[-1] < losses_seen[0]
  assert int(state.step) == 4
