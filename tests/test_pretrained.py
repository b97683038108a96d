"""Pretrained weights: every zoo model with a torchvision twin converts from torchvision's state
dict and gives torchvision's logits (random weights, random BatchNorm statistics: no download);
the files are read safely; the published preprocessing is carried."""

import logging
import os
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from benchmarks import torchvision_cpu
from cnn_jax import models
from cnn_jax.errors import ConfigError
from cnn_jax.models import pretrained

torchvision = torchvision_cpu.load()

CONVERTIBLE = [name for name in models.list_models() if models.entry(name).torchvision]
# A real forward pass against torchvision for each family's smallest member and each distinct
# block (grouped bottlenecks, fused MBConv...); inputs as small as the architecture allows (VGG
# and AlexNet flatten a fixed-size map: native size).
FORWARD = {'alexnet': 224, 'vgg11_bn': 224, 'googlenet': 96, 'resnet18': 64, 'resnet50': 64,
           'resnext50_32x4d': 64, 'densenet121': 64, 'efficientnet_b0': 64,
           'efficientnet_v2_s': 64, 'mobilenet_v2': 64, 'mobilenet_v3_large': 64,
           'regnet_y_400mf': 64, 'convnext_tiny': 64}


def _torchvision_model(name: str, seed: int = 0):
  """torchvision's model with random weights and random BatchNorm statistics, in eval mode."""
  torch.manual_seed(seed)
  kwargs = {'init_weights': True, 'aux_logits': False} if name == 'googlenet' else {}
  model = torchvision.models.get_model(name, weights=None, **kwargs).eval()
  for module in model.modules():
    if isinstance(module, torch.nn.BatchNorm2d):
      module.running_mean.uniform_(-0.5, 0.5)
      module.running_var.uniform_(0.5, 2.0)
      module.weight.data.uniform_(0.5, 1.5)
      module.bias.data.uniform_(-0.5, 0.5)
  return model


def _logits(model, variables, images: np.ndarray) -> np.ndarray:
  apply = jax.jit(lambda v, x: model.apply(v, x, train=False))
  return np.asarray(apply(variables, jnp.asarray(images.transpose(0, 2, 3, 1))))


def test_every_twin_is_tested_and_torchvision_names_them():
  assert set(FORWARD) <= set(CONVERTIBLE)
  assert set(CONVERTIBLE) <= set(torchvision.models.list_models())
  assert {'resnext50_32x4d', 'wide_resnet50_2', 'mobilenet_v2', 'mobilenet_v3_large',
          'efficientnet_v2_s', 'regnet_y_400mf', 'regnet_y_8gf', 'convnext_tiny',
          'convnext_small', 'convnext_base'} <= set(CONVERTIBLE)


@pytest.mark.slow
@pytest.mark.parametrize('name', sorted(FORWARD))
def test_converted_weights_give_torchvisions_logits(name, tmp_path):
  reference = _torchvision_model(name)
  path = str(tmp_path / f'{name}.pth')
  torch.save(reference.state_dict(), path)
  images = np.random.default_rng(0).standard_normal((2, 3, FORWARD[name], FORWARD[name]))
  images = images.astype(np.float32)
  with torch.no_grad():
    expected = reference(torch.from_numpy(images)).numpy()
  model, variables = pretrained.load_pretrained(name, path)
  got = _logits(model, variables, images)
  assert got.shape == expected.shape == (2, 1000)
  assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max()


@pytest.mark.slow
@pytest.mark.parametrize('name', sorted(set(CONVERTIBLE) - set(FORWARD)))
def test_every_other_twin_converts_tensor_for_tensor(name):
  """The rest of each family: every tensor of torchvision's state dict finds its place and shape
  (built on the meta device where torchvision allows: no memory, no forward pass)."""
  try:
    with torch.device('meta'):
      state = torchvision.models.get_model(name, weights=None).state_dict()
  except NotImplementedError:  # RegNet computes its widths with tensors: build it for real
    state = torchvision.models.get_model(name, weights=None).state_dict()
  spec = models.entry(name).torchvision
  model = models.get_model(name, num_classes=1000, **spec.overrides)
  zeros = {key: np.broadcast_to(np.float32(0), tuple(value.shape)) for key, value in state.items()}
  filled = dict(pretrained._converted(  # pylint: disable=protected-access
      model, zeros, spec, models.input_shape(name)))
  expected = pretrained.layers(model, models.input_shape(name))
  assert list(filled) == [layer.name for layer in expected]
  assert all(set(filled[layer.name]) == set(layer.tensors) for layer in expected)


@pytest.mark.parametrize('name', CONVERTIBLE)
def test_preprocessing_is_torchvisions(name):
  spec = models.entry(name).torchvision
  published = {weights.url.rsplit('/', 1)[-1]: weights
               for weights in torchvision.models.get_model_weights(name)}
  for ours in spec.weights:
    theirs = published[ours.file]
    transform = theirs.transforms()
    assert ours.top1 == pytest.approx(theirs.meta['_metrics']['ImageNet-1K']['acc@1'])
    assert (ours.preprocessing.resize, ours.preprocessing.crop) == (
        transform.resize_size[0], transform.crop_size[0])
    assert ours.preprocessing.interpolation == transform.interpolation.value
    if name != 'googlenet':  # its weights expect inputs in [-1, 1] (transform_input)
      assert ours.preprocessing.mean == pytest.approx(transform.mean)
      assert ours.preprocessing.std == pytest.approx(transform.std)


@pytest.fixture(scope='module')
def resnet18_file(tmp_path_factory):
  path = str(tmp_path_factory.mktemp('weights') / 'resnet18-f37072fd.pth')
  torch.save(_torchvision_model('resnet18').state_dict(), path)
  return path


@pytest.mark.slow
def test_safetensors_file_loads_like_the_pth(resnet18_file, tmp_path):
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  state = pretrained.read_state_dict(resnet18_file)
  path = str(tmp_path / 'model.safetensors')
  save_file(state, path)  # stored sorted by name: the order comes from the names
  _, from_pth = pretrained.load_pretrained('resnet18', resnet18_file)
  _, from_safetensors = pretrained.load_pretrained('resnet18', path)
  assert jax.tree_util.tree_all(jax.tree_util.tree_map(
      lambda a, b: bool(jnp.array_equal(a, b)), from_pth, from_safetensors))


class _RunsCode:

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (open, (self.marker, 'w'))


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
  marker = str(tmp_path / 'code_ran')
  path = str(tmp_path / 'resnet18.pth')
  with open(path, 'wb') as f:
    pickle.dump({'conv1.weight': _RunsCode(marker)}, f, protocol=2)
  with pytest.raises(ConfigError, match='weights_only=True'):
    pretrained.load_pretrained('resnet18', path)
  assert not os.path.exists(marker)


def test_another_number_of_classes_gets_a_fresh_head(resnet18_file, caplog):
  with caplog.at_level(logging.WARNING):
    model, variables = pretrained.load_pretrained('resnet18', resnet18_file, num_classes=10)
  assert model.num_classes == 10 and variables['params']['head']['kernel'].shape == (512, 10)
  assert 'freshly initialised' in caplog.text
  state = pretrained.read_state_dict(resnet18_file)
  np.testing.assert_array_equal(variables['params']['stem']['Conv_0']['kernel'],
                                state['conv1.weight'].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(variables['batch_stats']['stem']['BatchNorm_0']['var'],
                                state['bn1.running_var'])


def test_a_file_of_another_model_names_the_first_misplaced_tensor(resnet18_file, tmp_path):
  with pytest.raises(ConfigError, match=r'Tensor layer1\.0\.conv1\.weight \(64, 64, 3, 3\) has no '
                     'place in the model'):
    pretrained.load_pretrained('resnet50', resnet18_file)
  with pytest.raises(ConfigError, match=r'Tensor layer2\.0\.conv1\.weight .* meets layer '
                     'ResidualBlock_2/Conv_0'):
    pretrained.load_pretrained('resnet34', resnet18_file)
  state = torch.load(resnet18_file, weights_only=True)
  truncated = str(tmp_path / 'truncated.pth')
  torch.save({k: v for k, v in state.items() if not k.startswith('layer4.1.')}, truncated)
  with pytest.raises(ConfigError, match=r'Tensor fc\.weight \(1000, 512\) has no place'):
    pretrained.load_pretrained('resnet18', truncated)
  torch.save({k: v for k, v in state.items() if not k.startswith('fc.')}, truncated)
  with pytest.raises(ConfigError, match='no tensor for layer head'):
    pretrained.load_pretrained('resnet18', truncated, num_classes=1000)


def test_missing_file_and_models_without_twin_are_one_line_errors(tmp_path):
  with pytest.raises(ConfigError, match='no such file.*docs/pretrained.md'):
    pretrained.load_pretrained('resnet18', str(tmp_path / 'nope.pth'))
  with pytest.raises(ConfigError, match='no torchvision twin.*resnet50'):
    pretrained.load_pretrained('lenet5', str(tmp_path / 'nope.pth'))


def test_analysis_opens_a_weights_file_with_its_preprocessing(resnet18_file):
  from cnn_jax import analysis  # pylint: disable=g-import-not-at-top
  net = analysis.load_pretrained('resnet18', resnet18_file)
  rng = np.random.default_rng(0)
  photos = [rng.integers(0, 256, (300, 400, 3), np.uint8), rng.integers(0, 256, (260, 260, 3),
                                                                          np.uint8)]
  x = net.preprocess(photos)
  assert x.shape == (2, 224, 224, 3) and x.dtype == np.float32
  transform = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.transforms()
  expected = np.stack([transform(torch.from_numpy(p).permute(2, 0, 1)).permute(1, 2, 0).numpy()
                       for p in photos])
  # The same crop and normalisation; the resizers differ (OpenCV against torchvision's
  # antialiased bilinear), by a little on average over noise images.
  assert np.abs(x - expected).mean() < 0.25
  assert net.apply(x).shape == (2, 1000) and net.classes(net.apply(x), k=3).shape == (2, 3)
