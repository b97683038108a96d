"""Every analytic figure of `cnn_jax.arithmetic` checked against the real modules."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from cnn_jax import arithmetic
from cnn_jax import layers as L


@st.composite
def stacks(draw):
  """A random 2-D stack of convolutions and poolings that keeps an output."""
  size = draw(st.integers(12, 24))
  layers, current = [], size
  for _ in range(draw(st.integers(1, 4))):
    kind = draw(st.sampled_from(['conv', 'conv', 'max', 'avg']))
    k = draw(st.integers(1, 3))
    s = draw(st.integers(1, 2))
    d = draw(st.integers(1, 2)) if kind == 'conv' else 1
    padding = draw(st.sampled_from(['VALID', 'SAME', 'HALF', 'FULL', 1] if kind == 'conv' else ['VALID', 'SAME', 'HALF']))
    try:
      out = arithmetic.conv_output_shape((current,), k, s, padding, d)[0]
    except ValueError:
      continue
    layers.append(dict(kind=kind, kernel_size=k, strides=s, dilation=d, padding=padding,
                       features=draw(st.integers(1, 4))))
    current = out
  return size, layers


class Stack(nn.Module):
  layers: tuple

  @nn.compact
  def __call__(self, x):
    for spec in self.layers:
      if spec['kind'] == 'conv':
        x = L.Conv(spec['features'], spec['kernel_size'], strides=spec['strides'],
                   padding=spec['padding'], kernel_dilation=spec['dilation'])(x)
      elif spec['kind'] == 'max':
        x = L.max_pool(x, spec['kernel_size'], spec['strides'], spec['padding'])
      else:
        x = L.avg_pool(x, spec['kernel_size'], spec['strides'], spec['padding'])
    return x


@settings(max_examples=20, deadline=None)
@given(stacks())
def test_summarize_agrees_with_the_formulas_and_the_module(stack):
  size, layers = stack
  assume(layers)  # every random layer may have been rejected for leaving no output
  model = Stack(tuple(layers))
  summary = arithmetic.summarize(model, (1, size, size, 2), print_fn=None)
  fields = arithmetic.receptive_fields(layers, (size, size))
  # One row per layer, pooling included, in order, with the formulas' field and jump.
  assert len(summary.layers) == len(layers)
  rows = iter(summary.layers)
  shape, channels = (size, size), 2
  for spec, field in zip(layers, fields):
    shape = arithmetic.conv_output_shape(shape, spec['kernel_size'], spec['strides'],
                                         spec['padding'], spec['dilation'])
    row = next(rows)
    assert row.receptive_field == field.size and row.jump == field.jump
    if spec['kind'] != 'conv':
      assert row.kind == f'{spec["kind"]}_pool' and row.params == row.macs == 0
      assert row.output_shape == (1, *shape, channels)
      continue
    k = (spec['kernel_size'],) * 2
    assert row.output_shape == (1, *shape, spec['features'])
    assert row.params == arithmetic.conv_params(k, channels, spec['features'])
    assert row.macs == arithmetic.conv_macs(shape, k, channels, spec['features'])
    channels = spec['features']
  # The real module agrees on the final shape.
  out = jax.eval_shape(lambda x: model.init_with_output(jax.random.key(0), x)[0],
                       jax.ShapeDtypeStruct((1, size, size, 2), jnp.float32))
  assert out.shape[1:-1] == shape


@pytest.mark.slow
@settings(max_examples=15, deadline=None)
@given(stacks())
def test_receptive_field_is_the_support_of_the_gradient(stack):
  """Field size and start, against which input pixels really influence one output unit."""
  size, layers = stack
  assume(layers)
  model = Stack(tuple(layers))
  x = jnp.ones((1, size, size, 1))
  variables = model.init(jax.random.key(0), x)
  # Positive weights and no ReLU: every path contributes, none cancels.
  variables = jax.tree_util.tree_map(lambda v: jnp.abs(v) + 0.1, variables)
  out = model.apply(variables, x)
  row = out.shape[1] // 2
  grad = jax.grad(lambda v: model.apply(variables, v)[0, row, row].sum())(x)[0, :, :, 0]
  touched = np.nonzero(np.asarray(grad).any(axis=1))[0]
  field = arithmetic.receptive_fields(layers, (size, size))[-1]
  centre = field.start[0] + row * field.jump[0]
  lo, hi = centre - (field.size[0] - 1) / 2, centre + (field.size[0] - 1) / 2
  assert lo <= touched.min() and touched.max() <= hi
  # The field is a span: strides may leave holes inside it, but its two ends are real taps (the
  # first or last tap at every layer) when the span lies inside the image. Max pooling routes the
  # gradient to one pixel per window, so only containment holds for it.
  if lo >= 0 and hi <= size - 1 and all(spec['kind'] != 'max' for spec in layers):
    assert (touched.min(), touched.max()) == (lo, hi)


def test_receptive_field_of_the_classic_stack():
  """Two 3x3 convs see 5x5, three see 7x7; a 2x2/2 pool in between doubles the jump."""
  fields = arithmetic.receptive_fields([dict(kernel_size=3)] * 3, (32, 32))
  assert [f.size[0] for f in fields] == [3, 5, 7]
  fields = arithmetic.receptive_fields(
      [dict(kernel_size=3, padding='SAME'), dict(kernel_size=2, strides=2),
       dict(kernel_size=3, padding='SAME')], (32, 32))
  assert [(f.size[0], f.jump[0]) for f in fields] == [(3, 1), (4, 2), (8, 2)]
  dilated = arithmetic.receptive_fields([dict(kernel_size=3, dilation=2 ** i) for i in range(4)], (64,))
  assert dilated[-1].size == (31,)  # 1 + 2*(1+2+4+8): exponential growth, linear parameters


def test_no_output_error_shows_the_formula_and_numbers():
  with pytest.raises(ValueError) as info:
    arithmetic.conv_output_shape((3, 3), 4, dilation=2)
  message = str(info.value)
  assert 'padded input 3' in message and 'dilated kernel 7' in message
  assert 'floor((i + lo + hi - d*(k-1) - 1)/s) + 1' in message and 'larger input' in message
  with pytest.raises(ValueError, match='has 3 entries but the input has 2'):
    arithmetic.conv_output_shape((8, 8), (3, 3, 3))


def test_summarize_attributes_branches_and_shortcuts():
  class Net(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
      x = L.Conv(8, 3, strides=2)(x)
      x = L.ResidualBlock(8, conv=functools.partial(L.Conv, padding='SAME'))(x, train)
      x = L.InceptionModule(2, 2, 3, 1, 2, 2)(x, train)
      x = L.ConvTranspose(4, 2, strides=2)(x)
      return nn.Dense(10)(L.global_avg_pool(x))

  printed = []
  summary = arithmetic.summarize(Net(), (1, 16, 16, 3), print_fn=printed.append)
  params = jax.eval_shape(Net().init, jax.random.key(0), jnp.zeros((1, 16, 16, 3)))['params']
  assert summary.total_params == sum(p.size for p in jax.tree_util.tree_leaves(params))
  assert summary.total_macs == sum(row.macs for row in summary.layers)
  rows = {row.name: row for row in summary.layers}
  assert rows['Conv_0'].receptive_field == (3, 3)
  assert rows['ResidualBlock_0/Conv_1'].receptive_field == (3 + 2 * 2 + 2 * 2,) * 2
  # Inception branches: the 1x1 sees 11 pixels, the 5x5 11 + 4*2 = 19, the 3x3-pool one 11 + 2*2.
  assert rows['InceptionModule_0/ConvNormAct_0/Conv_0'].receptive_field == (11, 11)
  assert rows['InceptionModule_0/ConvNormAct_4/Conv_0'].receptive_field == (19, 19)
  assert rows['InceptionModule_0/ConvNormAct_5/Conv_0'].receptive_field == (15, 15)
  # A transposed conv's MACs count real inputs: 8*8 inputs x 2*2 taps x 9 in x 4 out.
  assert rows['ConvTranspose_0'].macs == 8 * 8 * 4 * 9 * 4
  assert rows['Dense_0'].receptive_field is None and rows['Dense_0'].macs == 40
  assert 'total' in printed[0] and 'receptive field' in printed[0]
  assert summary.other_variables == 2 * (8 + 8)  # BatchNorm mean and var of two layers


def test_summarize_takes_one_example_shape_where_the_model_tells_it_from_a_batch():
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  from cnn_jax import models  # pylint: disable=g-import-not-at-top

  class Fixed(nn.Module):  # a 2-D kernel: [8, 8, 1] can only be one example
    @nn.compact
    def __call__(self, x, train=False):
      return nn.Dense(3)(nn.Conv(4, (3, 3))(x).reshape(x.shape[0], -1))

  wavenet = models.get_model('wavenet', num_classes=10)  # checks its input's rank itself
  for model, example in ((Fixed(), (8, 8, 1)), (wavenet, (40, 1))):
    one = arithmetic.summarize(model, example, print_fn=None, train=False)
    batched = arithmetic.summarize(model, (1, *example), print_fn=None, train=False)
    assert (one.input_shape, one.total_macs, one.total_params) == (
        batched.input_shape, batched.total_macs, batched.total_params) and one.total_macs > 0
