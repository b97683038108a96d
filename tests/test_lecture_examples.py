"""The worked numeric examples of the lecture notes the project is specified by (kept outside this
repository), reproduced with our layers.

Where a slide's printed number disagrees with the definition, the definition wins and the test
names the number the slide got wrong.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_jax import arithmetic
from cnn_jax import layers as L


def conv2d(x, kernel, bias=None, **kwargs):
  """Applies `L.Conv` with the given weights to a single-channel [H, W] or [H, W, C] image."""
  x = jnp.asarray(x, jnp.float32)
  x = x[None, ..., None] if x.ndim == 2 else x[None]
  kernel = jnp.asarray(kernel, jnp.float32)
  kernel = kernel[..., None, None] if kernel.ndim == 2 else kernel
  params = {'kernel': kernel}
  if bias is not None:
    params['bias'] = jnp.asarray(bias, jnp.float32)
  layer = L.Conv(kernel.shape[-1], kernel.shape[:2], use_bias=bias is not None, **kwargs)
  return np.asarray(layer.apply({'params': params}, x))[0]


def test_vertical_edge_6x6():
  """002: 6x6 image * 3x3 vertical-edge filter, no padding -> the printed 4x4 map."""
  image = [[3, 0, 1, 2, 7, 4], [1, 5, 8, 9, 3, 1], [2, 7, 2, 5, 1, 3],
           [0, 1, 3, 1, 7, 8], [4, 2, 1, 6, 2, 8], [2, 4, 5, 2, 3, 9]]
  edge = [[1, 0, -1], [1, 0, -1], [1, 0, -1]]
  expected = [[-5, -4, 0, 8], [-10, -2, 2, 3], [0, -2, -4, -7], [-3, -2, -3, -16]]
  np.testing.assert_array_equal(conv2d(image, edge, padding='VALID')[..., 0], expected)


def test_strided_7x7_with_3x3():
  """002: 7x7 * 3x3 with stride 2 -> 3x3 output, whose first row the slide prints as 91 100 83.

  The slide got the third number wrong: the definition gives 88 (the window rows 0-2, columns 4-6:
  6*3+2*4+9*4 + 7*1+4*0+3*2 + 8*-1+9*0+7*3 = 88).
  """
  image = [[2, 3, 7, 4, 6, 2, 9], [6, 6, 9, 8, 7, 4, 3], [3, 4, 8, 3, 8, 9, 7],
           [7, 8, 3, 6, 6, 3, 4], [4, 2, 1, 8, 3, 4, 6], [3, 2, 4, 1, 9, 8, 3],
           [0, 1, 3, 9, 2, 1, 4]]
  kernel = [[3, 4, 4], [1, 0, 2], [-1, 0, 3]]
  out = conv2d(image, kernel, strides=2, padding='VALID')[..., 0]
  assert out.shape == (3, 3) == arithmetic.conv_output_shape((7, 7), 3, 2)  # (7+0-3)/2+1 = 3
  slide_first_row = [91, 100, 83]
  np.testing.assert_array_equal(out[0, :2], slide_first_row[:2])
  assert out[0, 2] == 88 != slide_first_row[2]


def test_two_filter_7x7x3_volume_with_biases():
  """000: a 5x5x3 input padded by 1 (7x7x3), two 3x3x3 filters, stride 2, biases 1 and 0 -> 3x3x2.

  The extracted slide prints four 3x3 matrices for W0; the three that reproduce the printed output
  are used. The one labelled w0[:, :, 2] ([[1,-1,1],[0,0,0],[1,-1,-1]]) does not: it would make
  o[1,1,0] = -4 and o[2,1,0] = -1 where the slide prints -6 and -5.
  """
  x0 = [[1, 2, 0, 0, 1], [2, 2, 0, 1, 0], [2, 2, 1, 2, 1], [0, 1, 1, 0, 2], [2, 1, 0, 2, 1]]
  x1 = [[0, 2, 0, 0, 1], [1, 1, 0, 2, 2], [0, 1, 1, 0, 2], [1, 2, 0, 2, 0], [0, 2, 0, 1, 0]]
  x2 = [[2, 2, 1, 0, 0], [2, 1, 0, 0, 1], [0, 2, 2, 2, 1], [1, 2, 1, 0, 2], [2, 1, 1, 1, 1]]
  w0 = [[[1, -1, -1], [-1, 0, 0], [-1, -1, 0]], [[-1, 0, 1], [-1, 0, 0], [-1, -1, -1]],
        [[-1, -1, 1], [0, 0, 0], [1, -1, -1]]]
  w1 = [[[0, 0, 1], [1, 1, 0], [0, 0, 0]], [[1, 0, 0], [1, -1, 1], [-1, 0, 0]],
        [[-1, 1, 0], [0, -1, 1], [1, 0, -1]]]
  x = np.stack([x0, x1, x2], -1)
  kernel = np.stack([np.stack(w0, -1), np.stack(w1, -1)], -1)  # [3, 3, 3 in, 2 out]
  out = conv2d(x, kernel, bias=[1, 0], strides=2, padding=1)
  np.testing.assert_array_equal(out[..., 0], [[-6, -7, -5], [-9, -6, -9], [3, -5, -8]])
  np.testing.assert_array_equal(out[..., 1], [[2, 3, -2], [7, 4, 1], [5, 5, 7]])
  assert L.Conv(2, 3).init(jax.random.key(0), jnp.zeros((1, 5, 5, 3)))['params']['kernel'].size == 54


X_IMAGE = np.full((9, 9), -1.0)
for _i in range(1, 8):
  X_IMAGE[_i, _i] = X_IMAGE[_i, 8 - _i] = 1.0
DIAGONAL = [[1, -1, -1], [-1, 1, -1], [-1, -1, 1]]
CROSS = [[1, -1, 1], [-1, 1, -1], [1, -1, 1]]
ANTI_DIAGONAL = [[-1, -1, 1], [-1, 1, -1], [1, -1, -1]]
# The slides print each normalised response (sum of products / 9) cut, not rounded, to 2 decimals.
DIAGONAL_MAP = [
    [0.77, -0.11, 0.11, 0.33, 0.55, -0.11, 0.33], [-0.11, 1.00, -0.11, 0.33, -0.11, 0.11, -0.11],
    [0.11, -0.11, 1.00, -0.33, 0.11, -0.11, 0.55], [0.33, 0.33, -0.33, 0.55, -0.33, 0.33, 0.33],
    [0.55, -0.11, 0.11, -0.33, 1.00, -0.11, 0.11], [-0.11, 0.11, -0.11, 0.33, -0.11, 1.00, -0.11],
    [0.33, -0.11, 0.55, 0.33, 0.11, -0.11, 0.77]]
CROSS_MAP = [
    [0.33, -0.55, 0.11, -0.11, 0.11, -0.55, 0.33], [-0.55, 0.55, -0.55, 0.33, -0.55, 0.55, -0.55],
    [0.11, -0.55, 0.55, -0.77, 0.55, -0.55, 0.11], [-0.11, 0.33, -0.77, 1.00, -0.77, 0.33, -0.11],
    [0.11, -0.55, 0.55, -0.77, 0.55, -0.55, 0.11], [-0.55, 0.55, -0.55, 0.33, -0.55, 0.55, -0.55],
    [0.33, -0.55, 0.11, -0.11, 0.11, -0.55, 0.33]]


def _truncate(values):
  return np.trunc(np.round(np.asarray(values) * 100, 6)) / 100


def x_or_o_maps():
  kernel = np.stack([DIAGONAL, CROSS, ANTI_DIAGONAL], -1)[:, :, None, :]
  return conv2d(X_IMAGE, kernel, padding='VALID') / 9


def test_x_or_o_filter_responses():
  """002: the 'X' image against three 3x3 feature filters -> 7x7x3 normalised maps."""
  maps = x_or_o_maps()
  assert maps.shape == (7, 7, 3)  # 1 + (9 - 3 + 0)/1 = 7, three filters
  np.testing.assert_allclose(_truncate(maps[..., 0]), DIAGONAL_MAP, atol=1e-9)
  np.testing.assert_allclose(_truncate(maps[..., 1]), CROSS_MAP, atol=1e-9)
  # The anti-diagonal filter sees the mirror image of what the diagonal one sees.
  np.testing.assert_allclose(maps[..., 2], maps[:, ::-1, 0], atol=1e-6)


def test_relu_then_max_pool_x_or_o():
  """002: ReLU, then 2x2 max pooling with stride 2 (7x7 -> 4x4, the last row/column padded).

  The ReLU slide prints 1.77 at the bottom-right of the first map; ReLU(0.77) is 0.77.
  """
  rectified = np.asarray(nn.relu(x_or_o_maps()))
  assert _truncate(rectified[6, 6, 0]) == 0.77
  pooled = _truncate(L.max_pool(jnp.asarray(rectified)[None], 2, strides=2, padding='SAME')[0])
  np.testing.assert_allclose(pooled[..., 0], [[1.00, 0.33, 0.55, 0.33], [0.33, 1.00, 0.33, 0.55],
                                              [0.55, 0.33, 1.00, 0.11], [0.33, 0.55, 0.11, 0.77]],
                             atol=1e-9)
  np.testing.assert_allclose(pooled[..., 1], [[0.55, 0.33, 0.55, 0.33], [0.33, 1.00, 0.55, 0.11],
                                              [0.55, 0.55, 0.55, 0.11], [0.33, 0.11, 0.11, 0.33]],
                             atol=1e-9)
  np.testing.assert_allclose(pooled[..., 2], [[0.33, 0.55, 1.00, 0.77], [0.55, 0.55, 1.00, 0.33],
                                              [1.00, 1.00, 0.11, 0.55], [0.77, 0.33, 0.55, 0.33]],
                             atol=1e-9)
  # Pooled twice: the 2x2 maps of the 'stacking up the layers' slide.
  twice = _truncate(L.max_pool(jnp.asarray(pooled)[None], 2, strides=2)[0])
  np.testing.assert_allclose(twice[..., 0], [[1.00, 0.55], [0.55, 1.00]], atol=1e-9)
  np.testing.assert_allclose(twice[..., 1], [[1.00, 0.55], [0.55, 0.55]], atol=1e-9)
  np.testing.assert_allclose(twice[..., 2], [[0.55, 1.00], [1.00, 0.55]], atol=1e-9)


def test_average_pooling_example():
  """002: 4x4 average-pooled with f=2, s=2 -> [[3.75, 1.25], [4, 2]]."""
  x = jnp.asarray([[1, 3, 2, 1], [2, 9, 1, 1], [1, 4, 2, 3], [5, 6, 1, 2]], jnp.float32)
  out = L.avg_pool(x[None, ..., None], 2, strides=2)[0, ..., 0]
  np.testing.assert_array_equal(out, [[3.75, 1.25], [4.0, 2.0]])


def _param_count(module, input_shape):
  variables = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros(input_shape))
  return sum(leaf.size for leaf in jax.tree_util.tree_leaves(variables['params']))


@pytest.mark.parametrize('kernel,cin,cout,standard,separable', [
    (3, 3, 5, 135, 42),            # (3x3)x3x5 vs (3x3)x3 + (1x1)x3x5
    (5, 64, 128, 204_800, 9_792),  # (5x5)x64x128 vs (5x5)x64 + (1x1)x64x128
])
def test_depthwise_separable_parameter_counts(kernel, cin, cout, standard, separable):
  """004: weights of a standard vs a depthwise-separable convolution (no biases)."""
  shape = (1, 8, 8, cin)
  assert _param_count(L.Conv(cout, kernel, use_bias=False), shape) == standard
  assert _param_count(L.SeparableConv(cout, kernel, use_bias=False), shape) == separable
  assert arithmetic.conv_params((kernel, kernel), cin, cout, use_bias=False) == standard


def test_shared_versus_unshared_filters_30x30x3():
  """000: 7x7x3 filters on a 30x30x3 image, depth 5, stride 1.

  Unshared (one filter per position): 24 x 24 positions x 5 x 147 = 423,360 weights. The slide says
  "a single hidden layer of depth 5 needs 85k parameters": 84,672 is the count for depth 1. Its
  256x256 figure (46 x 10^6) is right for depth 5. Shared: 5 x 7 x 7 x 3 = 735.
  """
  per_filter = arithmetic.conv_params((7, 7), 3, 1, use_bias=False)
  positions = arithmetic.conv_output_shape((30, 30), 7)
  assert positions == (24, 24) and per_filter == 147
  assert np.prod(positions) * 5 * per_filter == 423_360
  assert np.prod(positions) * 1 * per_filter == 84_672  # the slide's "85k"
  assert round(np.prod(arithmetic.conv_output_shape((256, 256), 7)) * 5 * per_filter / 1e6) == 46
  assert _param_count(L.Conv(5, 7, use_bias=False), (1, 30, 30, 3)) == 735


def test_ten_3x3x3_filters_have_280_parameters():
  """002 exercise: 10 filters of 3x3x3, each with a bias."""
  assert _param_count(L.Conv(10, 3), (1, 8, 8, 3)) == 280


@pytest.mark.parametrize('padding,expected', [('VALID', 3_697_962), ('SAME', 4_205_866)])
def test_exercise_128x128_two_conv_network(padding, expected):
  """002 exercise: two 3x3x32 convs with 2x2 max-pool after each, FC-128, 10-way softmax, 128x128 RGB.

  VALID: 896 + 9,248 + (30*30*32*128 + 128) + 1,290. SAME: the FC input is 32*32*32 instead.
  """

  class Exercise(nn.Module):
    @nn.compact
    def __call__(self, x):
      for _ in range(2):
        x = L.max_pool(nn.relu(L.Conv(32, 3, padding=padding)(x)), 2, strides=2)
      x = nn.relu(nn.Dense(128)(x.reshape(x.shape[0], -1)))
      return nn.Dense(10)(x)

  summary = arithmetic.summarize(Exercise(), (1, 128, 128, 3), print_fn=None)
  assert summary.total_params == expected
  assert [row.params for row in summary.layers[:4]] == [896, 0, 9_248, 0]  # conv, pool, ...
  assert [row.kind for row in summary.layers[:4]] == ['Conv', 'max_pool'] * 2


def test_sobel_is_rank_one_and_separable():
  """004: Sobel = [1 2 1]^T [1 0 -1]; a separable pass equals the full 3x3 convolution."""
  sobel = np.array([[1, 0, -1], [2, 0, -2], [1, 0, -1]], np.float64)
  column, row = L.separable_factors(sobel)
  np.testing.assert_allclose(np.outer(column, row), sobel, atol=1e-12)
  np.testing.assert_allclose(column / column[0], [1, 2, 1], atol=1e-12)
  np.testing.assert_allclose(row / row[0], [1, 0, -1], atol=1e-12)
  scharr = np.array([[3, 0, -3], [10, 0, -10], [3, 0, -3]], np.float64)
  np.testing.assert_allclose(np.outer(*L.separable_factors(scharr)), scharr, atol=1e-12)
  with pytest.raises(ValueError, match='rank 3'):
    L.separable_factors(np.array([[1.0, 2, 0], [0, 1, 3], [4, 0, 1]]))

  image = jax.random.normal(jax.random.key(0), (1, 10, 10, 1))
  full = L.Conv(1, 3, use_bias=False).apply({'params': {'kernel': jnp.asarray(sobel)[..., None, None]}},
                                            image)
  params = {'axis0': {'kernel': jnp.asarray(column, jnp.float32).reshape(3, 1, 1, 1)},
            'axis1': {'kernel': jnp.asarray(row, jnp.float32).reshape(1, 3, 1, 1)}}
  separable = L.SpatiallySeparableConv(1, (3, 3), use_bias=False).apply({'params': params}, image)
  np.testing.assert_allclose(separable, full, atol=1e-5)


def test_stride_that_leaves_input_unused():
  """003: a 3x3 filter with stride 3 on a 7x7 input: 'not really an image' - a fact, not an error."""
  geometry = arithmetic.conv_geometry((7, 7), 3, 3)
  assert geometry.output_size == (2, 2) and geometry.unused == (1, 1)
  assert 'unused' in geometry.describe()
  assert arithmetic.conv_geometry((7, 7), 3, 2).unused == (0, 0)
  summary = arithmetic.summarize(L.Conv(1, 3, strides=3, padding='VALID'), (1, 7, 7, 1),
                                 print_fn=None)
  assert summary.layers[0].output_shape == (1, 2, 2, 1) and 'unused' in summary.layers[0].notes[0]


def test_padding_rules_of_the_notes():
  """000/002: 'same' pads p = (f-1)/2 per side for odd f; 'full' pads f-1 per side.

  000 says SAME adds ceil(F/2) zeros on each side for odd kernels: for F=3 that is 2 per side and
  a 5x5 output from 3x3, not SAME; the right amount is floor(F/2) = (F-1)/2. It also gives FULL's
  output height as H + 2(F-1); that is the padded input, the output is H + F - 1.
  """
  for f in (1, 3, 5, 7):
    assert arithmetic.padding_pairs('SAME', (6,), (f,)) == (((f - 1) // 2, (f - 1) // 2),)
    assert arithmetic.conv_output_shape((6,), f, padding='SAME') == (6,)
    assert arithmetic.conv_output_shape((6,), f, padding='FULL') == (6 + f - 1,)
  assert arithmetic.conv_output_shape((6,), 3, padding=2) == (8,)  # ceil(3/2) = 2: not 'same'
