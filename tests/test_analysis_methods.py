"""The interpretation methods against definitions, hand-written references and plain loops."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_jax import analysis, arithmetic, models
from cnn_jax import layers as L
from cnn_jax.analysis import plots


class ConvReluPool(nn.Module):
  """conv -> ReLU -> 2x2 max-pool -> dense -> ReLU -> dense: the nets DeconvNet was made for."""

  @nn.compact
  def __call__(self, x, train=False):
    x = nn.relu(L.Conv(4, 3, padding='VALID')(x))
    x = L.max_pool(x, 2, strides=2)
    x = nn.relu(nn.Dense(8)(x.reshape(x.shape[0], -1)))
    return nn.Dense(3)(x)


def _init(model, shape, seed=0):
  return jax.jit(lambda: model.init(jax.random.key(seed), jnp.zeros(shape), train=False))()


@pytest.fixture(scope='module')
def tiny():
  model = ConvReluPool()
  variables = _init(model, (1, 8, 8, 2))
  x = jax.random.normal(jax.random.key(1), (3, 8, 8, 2))
  return model, variables, x


def _reference_backward(variables, x, target, relu_backward):
  """The backward pass written out stage by stage, with ``relu_backward(z, g)`` at each ReLU."""
  p = variables['params']
  conv = lambda x: L.Conv(4, 3, padding='VALID').apply({'params': p['Conv_0']}, x)
  pool = lambda a: L.max_pool(a, 2, strides=2)
  dense1 = lambda h: nn.Dense(8).apply({'params': p['Dense_0']}, h.reshape(h.shape[0], -1))
  dense2 = lambda h: nn.Dense(3).apply({'params': p['Dense_1']}, h)
  z1, conv_vjp = jax.vjp(conv, x)
  a1 = jax.nn.relu(z1)
  h1, pool_vjp = jax.vjp(pool, a1)
  z2, dense1_vjp = jax.vjp(dense1, h1)
  _, dense2_vjp = jax.vjp(dense2, jax.nn.relu(z2))
  g = dense2_vjp(jax.nn.one_hot(target, 3))[0]
  g = dense1_vjp(relu_backward(z2, g))[0]
  g = pool_vjp(g)[0]  # the gradient of max-pool un-pools through the forward switches
  return conv_vjp(relu_backward(z1, g))[0]


@pytest.mark.slow
def test_guided_backprop_and_deconvnet_equal_a_hand_written_reference(tiny):
  model, variables, x = tiny
  target = jnp.asarray([0, 1, 2])
  guided = _reference_backward(variables, x, target, lambda z, g: g * (z > 0) * (g > 0))
  deconv = _reference_backward(variables, x, target, lambda z, g: jnp.maximum(g, 0))
  plain = _reference_backward(variables, x, target, lambda z, g: g * (z > 0))
  np.testing.assert_allclose(analysis.guided_backprop(model, variables, x, target), guided,
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(analysis.deconvnet(model, variables, x, target), deconv,
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(analysis.saliency(model, variables, x, target), plain,
                             rtol=1e-5, atol=1e-6)
  # The three rules really differ on this input, so the equalities above say something.
  assert not np.allclose(guided, plain) and not np.allclose(deconv, plain)


def test_backward_rules_work_on_zoo_models_and_refuse_a_model_without_relu():
  resnet = models.get_model('resnet20', num_classes=10, width=4)  # ReLUs in blocks and shortcuts
  variables = _init(resnet, (1, 16, 16, 3))
  x = jax.random.normal(jax.random.key(0), (2, 16, 16, 3))
  maps = analysis.guided_backprop(resnet, variables, x)
  assert maps.shape == x.shape and np.all(np.isfinite(maps)) and np.abs(maps).sum() > 0
  assert not np.allclose(maps, analysis.saliency(resnet, variables, x))
  lenet = models.get_model('lenet5', num_classes=10)  # tanh: nothing for the rule to change
  with pytest.raises(ValueError, match='has no jax.nn.relu.*use saliency'):
    analysis.deconvnet(lenet, _init(lenet, (1, 32, 32, 1)), jnp.zeros((1, 32, 32, 1)))


class Linear(nn.Module):
  @nn.compact
  def __call__(self, x, train=False):
    return nn.Dense(4, name='dense')(x.reshape(x.shape[0], -1))


def test_saliency_and_smoothgrad_of_a_linear_model_are_its_weights():
  linear = Linear()
  variables = _init(linear, (1, 5, 5, 1))
  x = jax.random.normal(jax.random.key(1), (2, 5, 5, 1))
  weights = variables['params']['dense']['kernel']
  for method in (analysis.saliency, analysis.smoothgrad):
    maps = method(linear, variables, x, jnp.asarray([1, 3]))
    np.testing.assert_allclose(maps[0].ravel(), weights[:, 1], rtol=1e-5)
    np.testing.assert_allclose(maps[1].ravel(), weights[:, 3], rtol=1e-5)
  # An int seed is a key; the same seed, the same noise.
  np.testing.assert_array_equal(analysis.smoothgrad(linear, variables, x, rng=3),
                                analysis.smoothgrad(linear, variables, x,
                                                    rng=jax.random.key(3)))


def test_integrated_gradients_are_complete(tiny):
  model, variables, x = tiny
  logits = analysis.probe.outputs(model, variables, x)
  target = jnp.argmax(logits, -1)
  baseline = jnp.full_like(x, -0.5)
  change = (logits - analysis.probe.outputs(model, variables, baseline))[jnp.arange(3), target]
  attributions = analysis.integrated_gradients(model, variables, x, None, baseline, steps=512)
  assert attributions.shape == x.shape
  np.testing.assert_allclose(attributions.sum((1, 2, 3)), change, rtol=0.01)
  coarse = analysis.integrated_gradients(model, variables, x, None, baseline, steps=1)
  assert not np.allclose(coarse.sum((1, 2, 3)), change, rtol=0.01)  # the test can fail


def test_grad_cam_with_global_average_pooling_is_cam():
  """With GAP and a linear head, Grad-CAM's weights are the head's weights over H*W (Zhou's CAM)."""

  class Gap(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
      x = L.ConvNormAct(6, 3, norm=None, name='features')(x)  # its output is after the ReLU
      return nn.Dense(3, name='head')(L.global_avg_pool(x))

  model = Gap()
  variables = _init(model, (1, 6, 6, 1))
  x = jax.random.normal(jax.random.key(2), (2, 6, 6, 1))
  cam = analysis.grad_cam(model, variables, x, jnp.asarray([0, 2]), layer='features')
  activation = analysis.feature_maps(model, variables, x, ['features'])['features']
  head = variables['params']['head']['kernel']
  expected = jax.nn.relu(jnp.einsum('nhwk,kn->nhw', activation, head[:, jnp.asarray([0, 2])]) / 36)
  np.testing.assert_allclose(cam.map, expected, rtol=1e-5, atol=1e-7)
  assert cam.upsampled.shape == (2, 6, 6)
  assert analysis.grad_cam(model, variables, x).map.shape == (2, 6, 6)  # default layer: features


def test_occlusion_equals_a_plain_loop_over_positions(tiny):
  model, variables, x = tiny
  target = jnp.asarray([2, 0, 1])
  maps = analysis.occlusion(model, variables, x, target, patch=3, stride=2, fill=0.5, chunk=4)
  assert maps.shape == (3, 3, 3)  # (8 - 3) // 2 + 1 positions per dimension
  for i in range(3):
    for j in range(3):
      occluded = x.at[:, 2 * i:2 * i + 3, 2 * j:2 * j + 3, :].set(0.5)
      probabilities = jax.nn.softmax(analysis.probe.outputs(model, variables, occluded))
      np.testing.assert_allclose(maps[:, i, j], probabilities[jnp.arange(3), target], rtol=1e-5)
  with pytest.raises(ValueError, match='does not fit'):
    analysis.occlusion(model, variables, x, patch=9)


@pytest.mark.slow
def test_mutation_map_equals_a_plain_loop():
  model = models.get_model('deepbind', num_motifs=4, motif_length=5, hidden=8, dropout=0.0)
  variables = _init(model, (1, 20, 4))
  x = jax.nn.one_hot(jax.random.randint(jax.random.key(3), (2, 20), 0, 4), 4)
  changes = analysis.mutation_map(model, variables, x, target=1, chunk=7)
  reference = analysis.probe.outputs(model, variables, x)[:, 1]
  for t in range(20):
    for a in range(4):
      mutant = x.at[:, t, :].set(jax.nn.one_hot(a, 4))
      expected = analysis.probe.outputs(model, variables, mutant)[:, 1] - reference
      expected = jnp.where(x[:, t, a] > 0, 0.0, expected)
      np.testing.assert_allclose(changes[:, t, a], expected, rtol=1e-5, atol=1e-6)
  assert np.all(np.asarray(changes)[np.asarray(x) > 0] == 0)


def _random_stack(rng):
  layers, spec = [], []
  pooled_max = False
  for _ in range(rng.integers(2, 6)):
    kind = rng.choice(['conv', 'conv', 'avg', 'max'])
    if kind == 'max' and pooled_max:
      kind = 'avg'
    pooled_max |= kind == 'max'
    k, s = int(rng.integers(1, 5)), int(rng.integers(1, 3))
    d = int(rng.integers(1, 4)) if kind == 'conv' else 1
    padding = str(rng.choice(['VALID', 'SAME']))
    spec.append(dict(kernel_size=k, strides=s, dilation=d, padding=padding))
    layers.append((kind, k, s, d, padding))
  return layers, spec


class Stack(nn.Module):
  layers: tuple

  @nn.compact
  def __call__(self, x, train=False):
    for kind, k, s, d, padding in self.layers:
      if kind == 'conv':
        x = L.Conv(3, k, strides=s, kernel_dilation=d, padding=padding)(x)
      else:
        x = (L.max_pool if kind == 'max' else L.avg_pool)(x, k, strides=s, padding=padding)
    return x


@pytest.mark.parametrize('seed', range(6))
def test_empirical_receptive_field_equals_the_analytic_one(seed):
  layers, spec = _random_stack(np.random.default_rng(seed))
  field = arithmetic.receptive_fields(spec, (64, 64))[-1]
  size = int(3 * field.size[0] + 8)
  model = Stack(tuple(layers))
  variables = _init(model, (1, size, size, 1))
  measured = analysis.empirical_receptive_field(model, variables, (size, size, 1))
  assert measured.size == tuple(int(f) for f in field.size), layers
  # summarize's convention, with the batch dimension, means the same.
  batched = analysis.empirical_receptive_field(model, variables, (1, size, size, 1))
  assert batched.size == measured.size


def test_empirical_receptive_field_names_a_shape_the_model_cannot_take():
  model = models.get_model('lenet5', num_classes=10)
  variables = _init(model, (1, 32, 32, 1))
  with pytest.raises(ValueError, match=r'does not take inputs of shape \(32, 32\)'):
    analysis.empirical_receptive_field(model, variables, (32, 32))


@pytest.mark.slow
def test_feature_maps_filters_and_top_patches():
  class Net(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
      x = nn.relu(L.Conv(3, 3, padding='VALID', name='first')(x))
      return L.Conv(5, 3, strides=2, padding='VALID', name='second')(x)

  net = Net()
  variables = _init(net, (1, 12, 12, 2))
  x = np.asarray(jax.random.normal(jax.random.key(4), (6, 12, 12, 2)))
  maps = analysis.feature_maps(net, variables, jnp.asarray(x))
  assert list(maps) == ['first', 'second'] and maps['second'].shape == (6, 4, 4, 5)
  with pytest.raises(ValueError, match="No layer named \\['third'\\].*first, second"):
    analysis.feature_maps(net, variables, x, ['third'])
  kernels = analysis.filters(variables, 'second')
  np.testing.assert_array_equal(kernels, np.moveaxis(variables['params']['second']['kernel'], -1, 0))
  assert kernels.shape == (5, 3, 3, 3)
  top = analysis.top_patches(net, variables, [x[:3], {'image': x[3:]}], 'second', channel=1, k=4)
  assert top.patches.shape == (4, 5, 5, 2)  # the second conv's units see 5x5 inputs
  assert np.all(np.diff(top.activations) <= 0)
  # Each patch is exactly the input its unit sees: the network on the patch alone gives the value.
  alone = net.apply(variables, jnp.asarray(top.patches))[:, 0, 0, 1]
  np.testing.assert_allclose(alone, top.activations, rtol=1e-5)
  values = np.asarray(maps['second'][..., 1]).ravel()
  np.testing.assert_allclose(top.activations, np.sort(values)[::-1][:4], rtol=1e-6)


@pytest.mark.slow
def test_embeddings_default_to_the_head_input_and_tsne_maps_them_to_2d():
  model = models.get_model('simple_cnn', num_classes=3, widths=(4, 6))
  variables = _init(model, (1, 8, 8, 1))
  batches = [{'image': np.random.default_rng(i).normal(size=(20, 8, 8, 1)).astype(np.float32),
              'label': np.full(20, i)} for i in range(3)]
  features, labels = analysis.embeddings(model, variables, batches)
  assert features.shape == (60, 6) and labels.tolist() == [0] * 20 + [1] * 20 + [2] * 20
  pooled = analysis.feature_maps(model, variables, batches[1]['image'], ['Dropout_0'])
  np.testing.assert_allclose(features[20:40], pooled['Dropout_0'], rtol=1e-5, atol=1e-6)
  named, _ = analysis.embeddings(model, variables, batches, layer='ConvNormAct_0')
  assert named.shape == (60, 4)  # spatial positions averaged
  assert analysis.tsne(features).shape == (60, 2)


@pytest.mark.slow
def test_every_plot_returns_its_figure_and_saves_it(tmp_path):
  rng = np.random.default_rng(0)
  images = rng.random((2, 8, 8, 3))
  made = {
      'grid': plots.image_grid(list(images), ['a', 'b']),
      'filters': plots.filter_grid(rng.normal(size=(6, 3, 3, 3))),
      'filters_1d': plots.filter_grid(rng.normal(size=(4, 7, 4))),
      'maps': plots.feature_map_grid(rng.random((8, 8, 5))),
      'curves': plots.curves({'train': {'loss': (np.arange(3), np.ones(3))},
                              'val': {'accuracy': (np.arange(2), np.ones(2))}}),
      'confusion': plots.confusion_matrix(np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2])),
      'overlays': plots.attribution_overlays(images, {'saliency': images,
                                                      'occlusion': rng.random((2, 3, 3))},
                                             occlusion=(4, 2)),
      'labels': plots.label_maps({'labels': rng.integers(0, 3, (2, 8, 8))}, ['a', 'b', 'c']),
      'scatter': plots.embedding_scatter(rng.normal(size=(30, 2)), np.arange(30) % 3),
      'boxes': plots.receptive_field_boxes(images[0], {'conv': ((2, 2), (3, 3))}),
      'logo': plots.motif_logo(plots.pwm_of_kernel(rng.normal(size=(6, 4)))),
      'mutation': plots.mutation_map(rng.normal(size=(10, 4)), np.eye(4)[rng.integers(0, 4, 10)]),
  }
  for name, fig in made.items():
    path = tmp_path / f'{name}.png'
    fig.savefig(path)
    assert fig.axes and path.stat().st_size > 1000, name
  assert made['confusion'].axes[0].get_title().startswith('accuracy 75.00% of 4')
  saved = tmp_path / 'saved.png'
  plots.curves({'train': {'loss': (np.arange(3), np.ones(3))}}, save=str(saved))
  assert saved.stat().st_size > 1000
  kernel = np.array([[5.0, 0, 0, 0], [0, 0, 0, 0]])
  pwm = plots.pwm_of_kernel(kernel)  # softmax at the weights' own scale, per position
  top = np.exp(5 / kernel.std())
  np.testing.assert_allclose(pwm, [[top / (top + 3), *[1 / (top + 3)] * 3], [0.25] * 4])


def test_attribution_overlays_have_colour_bars_shared_scales_and_patch_centred_occlusion():
  rng = np.random.default_rng(0)
  images = rng.random((2, 16, 16, 1))
  maps = {'occlusion 4/2': rng.random((2, 7, 7)), 'saliency': rng.normal(size=(2, 16, 16, 1)),
          'integrated gradients': 10 * rng.normal(size=(2, 16, 16, 1))}
  with pytest.raises(ValueError, match='occlusion=\\(patch, stride\\)'):
    plots.attribution_overlays(images, maps)

  def drawn(fig):
    """{(row, method): the overlay's AxesImage}, and the colour bars' axes."""
    panels = [ax for ax in fig.axes if ax.get_label() != '<colorbar>']
    bars = [ax for ax in fig.axes if ax.get_label() == '<colorbar>']
    grid = np.asarray(panels).reshape(2, 4)
    return {(r, n): grid[r, c + 1].get_images()[-1] for r in range(2)
            for c, n in enumerate(maps)}, bars

  own, bars = drawn(plots.attribution_overlays(images, maps, occlusion=(4, 2)))
  assert len(bars) == 6  # one per map panel
  assert own[0, 'saliency'].get_clim() != own[1, 'saliency'].get_clim()
  shared, _ = drawn(plots.attribution_overlays(images, maps, occlusion=(4, 2), scale='shared'))
  gradients = {shared[r, n].get_clim() for r in range(2) for n in ('saliency', 'integrated gradients')}
  assert len(gradients) == 1  # one scale for every gradient map, both examples
  assert shared[0, 'occlusion 4/2'].get_clim() != gradients.pop()  # probabilities keep theirs
  by_method, _ = drawn(plots.attribution_overlays(images, maps, occlusion=(4, 2), scale='method'))
  assert by_method[0, 'saliency'].get_clim() == by_method[1, 'saliency'].get_clim()
  assert by_method[0, 'saliency'].get_clim() != by_method[0, 'integrated gradients'].get_clim()
  # Cell i of a 4-wide patch at stride 2 is centred on the patch's centre, pixel 2i + 1.5.
  left, right, bottom, top = own[0, 'occlusion 4/2'].get_extent()
  centres = left + 2 * np.arange(7) + 1
  np.testing.assert_allclose(centres, 2 * np.arange(7) + 1.5)
  assert (right - left, bottom - top) == (14, 14)


def test_label_maps_give_each_class_one_colour_in_every_panel_and_a_legend():
  labels = np.zeros((2, 4, 4), int)
  labels[0, :2] = 1
  labels[1] = 2  # panels with different classes present: per-panel rescaling would recolour
  predicted = np.full((2, 4, 4), 2)
  fig = plots.label_maps({'labels': labels, 'predicted': predicted}, ['bg', 'square', 'circle'])
  colours = {}
  for ax in fig.axes:
    image = ax.get_images()[0]
    rgba = image.to_rgba(image.get_array())
    for value, colour in zip(np.asarray(image.get_array()).ravel(), rgba.reshape(-1, 4)):
      colours.setdefault(int(value), set()).add(tuple(np.round(colour, 4)))
  assert all(len(c) == 1 for c in colours.values()) and len(colours) == 3
  assert len({next(iter(c)) for c in colours.values()}) == 3
  assert [t.get_text() for t in fig.legends[0].get_texts()] == ['bg', 'square', 'circle']


def test_curves_overlay_several_runs_with_a_legend():
  history = {'train': {'loss': (np.arange(3), np.ones(3))},
             'val': {'loss': (np.arange(2), np.ones(2))}}
  fig = plots.curves({'lr 0.1': history, 'lr 0.01': history})
  labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
  assert labels == ['lr 0.1 train', 'lr 0.1 val', 'lr 0.01 train', 'lr 0.01 val']
  lines = fig.axes[0].get_lines()
  assert lines[0].get_color() == lines[1].get_color() != lines[2].get_color()


def test_mutation_map_labels_do_not_overlap():
  rng = np.random.default_rng(0)
  fig = plots.mutation_map(rng.normal(size=(100, 4)), np.eye(4)[rng.integers(0, 4, 100)],
                           title='a sequence')
  fig.canvas.draw()
  renderer = fig.canvas.get_renderer()
  texts = [t for ax in fig.axes for t in (ax.xaxis.label, ax.yaxis.label, ax.title)
           if t.get_text()]
  boxes = [t.get_window_extent(renderer) for t in texts]
  for i, a in enumerate(boxes):
    for b in boxes[i + 1:]:
      assert not a.overlaps(b), [t.get_text() for t in texts]
