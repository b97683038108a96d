"""The one function through which every convolution module in `cnn_jax.layers` computes.

Modules resolve their arguments (kernel shapes, explicit padding) and call `convolve`, which
computes the same maths in one of several forms:

* ``'xla'``: XLA's native convolution (cuDNN on GPUs, the MXU on TPUs).
* ``'matmul'``: convolution as matrix multiplication, the notes' Toeplitz / im2col view: the input
  windows of every kernel tap side by side ("patches"), times the kernel as a matrix (for a single
  input channel, each tap's window a plane of its own and the product transposed); a 1x1 kernel
  is a plain matrix product; a depthwise kernel, whose channels never mix, is a sum of shifted
  copies of the input scaled per channel. On CPUs these run on XLA's multi-threaded matrix
  product and fused element-wise loops, where its native convolution, except the forward 2-D ones
  YNNPACK takes (see 'mixed'), uses one core (and its grouped convolution is slower still).
  Transposed and partially grouped convolutions stay 'xla'.
* ``'mixed'``: 'matmul' with backward passes of its own for CPUs. 2-D float32 convolutions with more
  than 16 input or output channels run forward, and backward to their input, as XLA's native
  convolution, which XLA's CPU backend hands to YNNPACK's direct kernels (the input's gradient as a
  forward convolution with the kernel flipped, so that YNNPACK takes it; a strided one's as one such
  convolution per phase of the stride, else the patches' transpose), and backward to the kernel as
  the patches' matrix product, the one gradient YNNPACK does not compute, built a cache-sized chunk
  of each device's batch at a time (a unit-stride first dim's taps as shifts of dy; a single input
  channel's planes all at once). On small maps with many channels, where much of the window falls on
  padding, these three are instead one matrix product per kernel tap with only the inputs it meets.
  Float32 depthwise convolutions keep only their input for the backward pass, compute its gradient
  one phase of the stride at a time, and sum every tap's kernel gradient in one pass over it. Being
  `jax.custom_vjp` rules, they are reverse mode only: forward-mode derivatives (`jax.jvp`,
  `jax.jacfwd`, `jax.hessian`) need 'matmul' or 'xla'.
* ``'auto'`` (default): 'mixed' on CPUs, 'xla' on GPUs and TPUs.

The form is chosen per call (``convolve(..., impl=)``, the ``conv_impl`` field of `Conv` and
`DepthwiseConv`) or for everything traced inside ``with convolve.use(impl):`` (the training loop
uses ``config.conv_impl``). It is read when a function is traced: a function jitted under one form
keeps it.
"""

import functools
import itertools
import math
from collections.abc import Iterator, Sequence

import jax
import jax.numpy as jnp
from jax import lax

from cnn_jax import arithmetic
# The form in force is `cnn_jax.conv_form`'s; these names are this module's too (convolve.use).
from cnn_jax.conv_form import IMPLS, resolve, use  # noqa: F401  pylint: disable=unused-import
from cnn_jax.layers import taps

# Bytes of copies per chunk of the kernel gradient's product: a chunk's copies stay in the CPU's
# caches (a few per-core L2s' worth, well under the shared L3), where all at once would be written
# to memory and read back (docs/performance.md, "CPU").
_CHUNK_BYTES = 3 * 2**20
# Shares of a window's products that meet inputs rather than padding, under which the tap by tap
# forms win: the forward pass by tap products (`_direct`, against YNNPACK's direct kernels, which
# multiply the padding's zeros too) and the kernel gradient by taps (`_tap_gradient`, against the
# patches, largely padding on small maps).
DIRECT_MET = 0.95
TAP_GRADIENT_MET = 0.8
# The tap products' cost grows as the channels shrink (each product's depth): `_met` weighs the
# share by 1 + FEW_CHANNELS / C.
FEW_CHANNELS = 32
# YNNPACK's direct kernels take XLA's 2-D float32 convolutions wider than this (channels in or
# out); narrower ones XLA runs on one core itself, slower than the patches' product.
DIRECT_MIN_CHANNELS = 16
def _dimension_numbers(rank: int) -> lax.ConvDimensionNumbers:
  # Channels last for any spatial rank: input/output [N, *spatial, C], kernel [*spatial, in, out].
  spatial = tuple(range(1, rank + 1))
  return lax.ConvDimensionNumbers(lhs_spec=(0, rank + 1) + spatial,
                                  rhs_spec=(rank + 1, rank) + tuple(range(rank)),
                                  out_spec=(0, rank + 1) + spatial)


def form(impl: str | None, kernel_shape: Sequence[int], feature_group_count: int = 1,
         input_dilation: Sequence[int] | None = None, platform: str | None = None,
         dtype: jnp.dtype = jnp.float32, sizes: tuple[Sequence[int], Sequence[int]] | None = None
         ) -> str:
  """Which computation `convolve` runs: 'xla', 'dense' (1x1), 'patches' (im2col), 'shifts'
  (depthwise), or 'mixed' and 'mixed_shifts' (those of 'mixed' with their own backward pass, see
  the module docstring). ``sizes``: the (input, output) spatial sizes, where known."""
  impl = resolve(impl, platform)
  if impl == 'xla' or (input_dilation and any(d > 1 for d in input_dilation)):
    return 'xla'
  *window, per_group, features = kernel_shape
  if feature_group_count == 1:
    if math.prod(window) == 1:
      return 'dense'
    # What XLA's CPU backend gives YNNPACK; it runs any other convolution on one core itself.
    direct = (impl == 'mixed' and len(window) == 2 and dtype == jnp.float32 and
              max(per_group, features) > DIRECT_MIN_CHANNELS and
              (sizes is None or _direct_takes(window, *sizes)))
    return 'mixed' if direct else 'patches'
  if per_group == 1 and features == feature_group_count:
    return 'mixed_shifts' if impl == 'mixed' and dtype == jnp.float32 else 'shifts'
  return 'xla'


def _direct_takes(window: Sequence[int], sizes: Sequence[int], out_sizes: Sequence[int]) -> bool:
  """Whether YNNPACK takes a convolution of this window from inputs of ``sizes`` to outputs of
  ``out_sizes``: neither the window nor the output larger than the (unpadded) input."""
  return all(k <= n and m <= n for k, n, m in zip(window, sizes, out_sizes))


def _patches(x: jax.Array, window: Sequence[int], strides: Sequence[int],
             dilation: Sequence[int]) -> jax.Array:
  """The windows of every kernel tap side by side: [N, *S_out, prod(window) * C], columns in the
  kernel's (*window, C) order."""
  # One spatial dim at a time, the last first (its taps become the innermost columns): a few
  # concatenations of wide slices copy faster on CPUs than one of a narrow slice per tap.
  for axis in reversed(range(1, len(window) + 1)):
    x = jnp.concatenate(taps.along(x, axis, window[axis - 1], strides[axis - 1],
                                    dilation[axis - 1]), axis=-1)
  return x


def _planes(x: jax.Array, window: Sequence[int], strides: Sequence[int],
            padding: Sequence[tuple[int, int]], dilation: Sequence[int]) -> jax.Array:
  """A single input channel's patches, taps first: [taps, N, *S_out, 1], each tap's window a plane
  of its own. Side by side, the patches would be written one value per tap at a time, which costs
  more than the planes' contiguous copies (docs/performance.md)."""
  return jnp.stack(taps.windows(taps.pad(x, padding), window, strides, dilation))


def convolve(x: jax.Array, kernel: jax.Array, *, strides: Sequence[int],
             padding: Sequence[tuple[int, int]], kernel_dilation: Sequence[int],
             input_dilation: Sequence[int] | None = None, feature_group_count: int = 1,
             precision: lax.PrecisionLike = None, impl: str | None = None) -> jax.Array:
  """Cross-correlates ``x`` [N, *S, C] with ``kernel`` [*K, C/groups, F] -> [N, *S', F].

  Args:
    x: input, channels last.
    kernel: weights, spatial dims first, then input channels per group, then output channels.
    strides: window step per spatial dim.
    padding: explicit (lo, hi) zeros per spatial dim; negative values crop.
    kernel_dilation: spacing of kernel taps per spatial dim.
    input_dilation: spacing inserted between input elements (transposed convolution), default 1.
    feature_group_count: number of channel groups (C for a depthwise convolution).
    precision: passed to XLA.
    impl: 'auto', 'xla', 'matmul' or 'mixed' (see the module docstring); default: the one in
      `use`.
  """
  rank = kernel.ndim - 2
  strides, dilation = tuple(strides), tuple(kernel_dilation)
  padding = tuple((lo, hi) for lo, hi in padding)
  input_dilation = tuple(input_dilation or (1,) * rank)
  window = kernel.shape[:rank]
  sizes = tuple((n - 1) * d + 1 for n, d in zip(x.shape[1:-1], input_dilation))
  out_sizes = arithmetic.conv_output_shape(sizes, window, strides, padding, dilation)
  computation = form(impl, kernel.shape, feature_group_count, input_dilation,
                     dtype=jnp.result_type(x, kernel), sizes=(sizes, out_sizes))
  if computation == 'xla':
    return _native(x, kernel, strides, padding, dilation, precision, input_dilation,
                   feature_group_count)
  if computation == 'mixed':
    return _mixed(x, kernel, strides, padding, dilation, precision)
  if computation == 'shifts':
    return _shift_sum(x, kernel, strides, padding, dilation)
  if computation == 'mixed_shifts':
    return _mixed_shifts(x, kernel, strides, padding, dilation)
  return _patch_product(x, kernel, strides, padding, dilation, precision)


def _patch_product(x, kernel, strides, padding, dilation, precision) -> jax.Array:
  """im2col: the patches times the kernel as a matrix, whose rows are (tap, input channel) in the
  order of the taps side by side."""
  rank = kernel.ndim - 2
  if x.shape[-1] == 1:  # taken transposed, [F, positions], from the planes
    planes = _planes(x, kernel.shape[:rank], strides, padding, dilation)
    product = jnp.dot(kernel.reshape(-1, kernel.shape[-1]).T, planes.reshape(len(planes), -1),
                      precision=precision)
    return jnp.moveaxis(product.reshape(-1, *planes.shape[1:-1]), 0, -1)
  patches = _patches(taps.pad(x, padding), kernel.shape[:rank], strides, dilation)
  # As one [positions, columns] matrix: the product's transposes (the gradients) then contract
  # a leading dim of 2-D operands, which XLA's CPU dot takes as they are; from the 4-D form it
  # would copy dy transposed first, which costs more than the whole kernel gradient.
  product = jnp.dot(patches.reshape(-1, patches.shape[-1]), kernel.reshape(-1, kernel.shape[-1]),
                    precision=precision)
  return product.reshape(*patches.shape[:-1], kernel.shape[-1])


def _shift_sum(x, kernel, strides, padding, dilation) -> jax.Array:
  """A depthwise convolution, one input channel per output channel: a kernel row per tap."""
  slices = taps.windows(taps.pad(x, padding), kernel.shape[:-2], strides, dilation)
  return sum(tap * row for tap, row in zip(slices, kernel.reshape(-1, kernel.shape[-1])))


def _native(x, kernel, strides, padding, dilation, precision, input_dilation=None,
            feature_group_count=1) -> jax.Array:
  return lax.conv_general_dilated(
      x, kernel, window_strides=strides, padding=padding, lhs_dilation=input_dilation,
      rhs_dilation=dilation, dimension_numbers=_dimension_numbers(kernel.ndim - 2),
      feature_group_count=feature_group_count, precision=precision)


def _direct(x, kernel, strides, padding, dilation, precision) -> jax.Array:
  """A 'mixed' convolution computed forward: by YNNPACK's direct kernels (XLA's native
  convolution), or, where much of the window falls on padding, as one product per tap with only
  the inputs it meets. YNNPACK multiplies the padding's zeros too, a large share of the products on
  small maps. The tap products' matrix products take the input's channels as their depth and
  write one output per tap, which costs more the fewer the channels: they are taken where the
  share of products that meet inputs is under `DIRECT_MET` (the layers where they measured faster:
  docs/performance.md)."""
  window = kernel.shape[:kernel.ndim - 2]
  out_sizes = arithmetic.conv_output_shape(x.shape[1:-1], window, strides, padding, dilation)
  reached, met = _met(x.shape, out_sizes, window, strides, padding, dilation)
  if met >= DIRECT_MET:
    return _native(x, kernel, strides, padding, dilation, precision)
  total = 0
  for tap, spans, inputs in _tap_inputs(x, reached, strides, padding, dilation):
    product = lax.dot_general(inputs, kernel[tap], (((x.ndim - 1,), (0,)), ((), ())),
                              precision=precision)
    total += taps.pad(product, [(first, o - last) for (first, last), o in zip(spans, out_sizes)])
  return total


def _met(shape, out_sizes, window, strides, padding, dilation) -> tuple[list, float]:
  """Per spatial dim of inputs of ``shape`` [N, *S, C], each tap's span of output positions that
  meet inputs (`taps.reach`); and the share of the window's products that meet inputs, times
  1 + `FEW_CHANNELS` / C for the tap products' cost over few channels (1 where no tap meets any
  input)."""
  reached = [taps.reach(n, o, k, s, d, lo) for n, o, k, s, d, (lo, _) in
             zip(shape[1:-1], out_sizes, window, strides, dilation, padding)]
  share = math.prod(sum(max(0, last - first) for first, last in dim) / (len(dim) * o)
                    for dim, o in zip(reached, out_sizes))
  return reached, share * (1 + FEW_CHANNELS / shape[-1]) if share else 1.0


def _tap_inputs(x, reached, strides, padding, dilation) -> Iterator[tuple]:
  """For each tap that meets any input: the tap, its spans of output positions (``reached``) and
  the inputs it meets there, from ``x`` [..., *S, C] (any number of leading batch dims)."""
  lead = x.ndim - 1 - len(reached)
  for tap in itertools.product(*(range(len(dim)) for dim in reached)):
    spans = [dim[t] for dim, t in zip(reached, tap)]
    if any(first >= last for first, last in spans):
      continue
    starts = [first * s + t * d - lo for (first, _), t, s, d, (lo, _) in
              zip(spans, tap, strides, dilation, padding)]
    limits = [b + (last - first - 1) * s + 1 for b, (first, last), s in zip(starts, spans, strides)]
    yield tap, spans, lax.slice(x, (0,) * lead + (*starts, 0),
                                (*x.shape[:lead], *limits, x.shape[-1]),
                                (1,) * lead + (*strides, 1))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _mixed(x, kernel, strides, padding, dilation, precision) -> jax.Array:
  return _direct(x, kernel, strides, padding, dilation, precision)


def _mixed_forward(x, kernel, strides, padding, dilation, precision):
  return _direct(x, kernel, strides, padding, dilation, precision), (x, kernel)


def _mixed_backward(strides, padding, dilation, precision, residuals, dy):
  x, kernel = residuals
  rank = kernel.ndim - 2
  window = kernel.shape[:rank]
  # XLA's own transpose reverses the window, and dilates a strided one's dy, neither of which
  # YNNPACK takes: a flipped kernel's forward convolution of dy per phase of the stride.
  if phases := _stride_phases(window, x.shape[1:-1], dy.shape[1:-1], strides, padding, dilation):
    dx = _phase_input_gradient(dy, kernel, x.shape[1:-1], strides, dilation, phases, precision)
  else:  # a kernel both dilated and strided, or a phase's window or output larger than dy
    _, transpose = jax.vjp(lambda x: _patch_product(x, kernel, strides, padding, dilation,
                                                    precision), x)
    dx, = transpose(dy)
  return dx, _patch_gradient(x, dy, window, strides, padding, dilation, precision)


_mixed.defvjp(_mixed_forward, _mixed_backward)


def _stride_phases(window, sizes, out_sizes, strides, padding, dilation) -> list | None:
  """Per spatial dim, per phase rho of the input's positions (i = k * stride + rho; one phase at
  unit stride): the kernel's taps that reach it, as a slice, and the padding of dy that makes its
  gradient a unit-stride convolution with them (at the kernel's dilation). None where YNNPACK
  would not take every such convolution (a kernel both dilated and strided, a phase's output or
  window larger than dy)."""
  phases = []
  for size, n, o, s, d, (lo, _) in zip(window, sizes, out_sizes, strides, dilation, padding):
    if d != 1 and s != 1:
      return None
    length = -(-n // s)
    dim = []
    for rho in range(s):
      # Input position q * s + rho, padded (m0 + q) * s + r, takes dy[m0 + q - j * d] times the
      # tap r + j * s for each j: dy cropped or padded by m0, correlated with those taps reversed.
      r, m0 = (lo + rho) % s, (lo + rho) // s
      taps_reached = len(range(r, size, s))
      if not 0 < taps_reached <= o or length > o:
        return None
      dim.append((slice(r, None, s), ((taps_reached - 1) * d - m0, length - o + m0)))
    phases.append(dim)
  return phases


def _phase_input_gradient(dy, kernel, sizes, strides, dilation, phases, precision) -> jax.Array:
  """A convolution's input gradient, one phase of the stride at a time: each phase's positions
  take a unit-stride convolution of dy with the taps that reach them, flipped (`_direct`), and the
  phases are interleaved: each phase a dense convolution, where the patches' product's transpose
  and col2im would scatter (several times slower on ResNet-18's strided layers:
  docs/performance.md)."""
  rank = kernel.ndim - 2
  parts = []
  for dims in itertools.product(*phases):
    sub = kernel[tuple(taps_slice for taps_slice, _ in dims)]
    parts.append(_direct(dy, jnp.flip(sub, tuple(range(rank))).swapaxes(-1, -2), (1,) * rank,
                         tuple(pads for _, pads in dims), dilation, precision))
  return taps.interleave(parts, strides)[(slice(None), *(slice(0, n) for n in sizes))]


def _patch_gradient(x, dy, window, strides, padding, dilation, precision) -> jax.Array:
  """The kernel's gradient: dy's transpose times the patches, summed over chunks of the batch
  whose copies stay in the CPU's cache. All the patches at once (ResNet-18's first layers: a
  hundred megabytes and more) cost more to write and read back than the product itself.

  Where the first spatial dim has unit stride, its taps are shifts of dy rather than copies of x:
  dy shifted by each of them (rows: tap, feature) times x's patches along the other dims
  (columns: their taps, channel) gives each (tap, channel, feature) sum once, from 3 + 3 copies of
  a 3x3 kernel's inputs rather than 1 + 9."""
  n, features = x.shape[0], dy.shape[-1]
  if x.shape[-1] == 1:  # the planes, only taps x the input, at once, times dy as YNNPACK takes it
    planes = _planes(x, window, strides, padding, dilation)
    return jnp.dot(planes.reshape(len(planes), -1), dy.reshape(-1, features),
                   precision=precision).reshape(*window, 1, features)
  # One group per device, each looping over its own chunks: under jit the batch is split over
  # devices, and a loop over the whole batch would gather it to every device. Under shard_map
  # (the 'pmap' mode) ``x`` is already one device's examples: one group.
  whole_batch = not jax.sharding.get_abstract_mesh().manual_axes
  groups = jax.device_count() if whole_batch and n % jax.device_count() == 0 else 1
  x = x.reshape(groups, n // groups, *x.shape[1:])
  dy = dy.reshape(groups, n // groups, *dy.shape[1:])
  reached, met = _met(x.shape[1:], dy.shape[2:-1], window, strides, padding, dilation)
  if met < TAP_GRADIENT_MET:
    return _tap_gradient(x, dy, reached, strides, padding, dilation, precision)
  if strides[0] == 1:  # the first dim's taps from dy: x's patches along the other dims only
    # Tap i meets x's row r at dy's row r + lo - i * dilation (none outside dy).
    lo = padding[0][0]
    crops = [(i * dilation[0] - lo, x.shape[2] - dy.shape[2] - i * dilation[0] + lo)
             for i in range(window[0])]
    x_window, x_padding = (1, *window[1:]), ((0, 0), *padding[1:])
    positions = (x.shape[2], *dy.shape[3:-1])
  else:
    crops, x_window, x_padding, positions = [(0, 0)], window, padding, dy.shape[2:-1]
  rows, columns = len(crops) * features, math.prod(x_window) * x.shape[-1]
  image_bytes = math.prod(positions) * (rows + columns) * x.dtype.itemsize
  per_group = n // groups
  chunk = max(d for d in range(1, per_group + 1)
              if per_group % d == 0 and (d == 1 or d * image_bytes <= _CHUNK_BYTES))
  zero = jnp.zeros((), dy.dtype)

  def accumulate(i, total):
    part = lambda z: lax.dynamic_slice_in_dim(z, i * chunk, chunk, axis=1)
    x_part = part(x).reshape(groups * chunk, *x.shape[2:])
    patches = _patches(taps.pad(x_part, x_padding), x_window, strides, dilation)
    shifted = jnp.concatenate([lax.pad(part(dy), zero, [(0, 0, 0)] * 2 + [(a, b, 0)] +
                                       [(0, 0, 0)] * len(window)) for a, b in crops], axis=-1)
    # Both [positions, ...], contracted over their leading dim as they are (by Eigen): YNNPACK
    # takes only untransposed operands, and transposing the shifted dy cost more than it gained.
    return total + lax.dot_general(shifted.reshape(groups, -1, rows),
                                   patches.reshape(groups, -1, columns),
                                   (((1,), (1,)), ((0,), (0,))), precision=precision)

  total = lax.fori_loop(0, per_group // chunk, accumulate,
                        jnp.zeros((groups, rows, columns), dy.dtype))
  # [dy's shifts, features, x's taps, channels] -> [*window, channels, features]
  total = total.sum(0).reshape(len(crops), features, -1, x.shape[-1]).transpose(0, 2, 3, 1)
  return total.reshape(*window, x.shape[-1], features)


def _tap_gradient(x, dy, reached, strides, padding, dilation, precision) -> jax.Array:
  """The kernel's gradient tap by tap, each tap's inputs (``reached``, from `_met`) times dy
  where they meet, for ``x`` and ``dy`` [groups, N / groups, *S, C]: on small maps, where the
  patches would be largely padding (taken where the share of products meeting inputs is under
  `TAP_GRADIENT_MET`, the layers where it measured faster: docs/performance.md)."""
  groups, channels, features = x.shape[0], x.shape[-1], dy.shape[-1]
  zero = jnp.zeros((groups, channels, features), dy.dtype)
  grads = {}
  for tap, spans, inputs in _tap_inputs(x, reached, strides, padding, dilation):
    outputs = dy[(slice(None), slice(None), *(slice(*span) for span in spans))]
    grads[tap] = lax.dot_general(inputs.reshape(groups, -1, channels),
                                 outputs.reshape(groups, -1, features),
                                 (((1,), (1,)), ((0,), (0,))), precision=precision)
  window = [len(dim) for dim in reached]
  every = jnp.stack([grads.get(tap, zero) for tap in itertools.product(*map(range, window))])
  return every.sum(1).reshape(*window, channels, features)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _mixed_shifts(x, kernel, strides, padding, dilation) -> jax.Array:
  return _shift_sum(x, kernel, strides, padding, dilation)


def _mixed_shifts_forward(x, kernel, strides, padding, dilation):
  # Only x is kept: autodiff of the shifts would keep every tap's slice, one copy of x each.
  return _shift_sum(x, kernel, strides, padding, dilation), (x, kernel)


def _mixed_shifts_backward(strides, padding, dilation, residuals, dy):
  x, kernel = residuals
  rank = kernel.ndim - 2
  window = kernel.shape[:rank]
  rows = kernel.reshape(-1, kernel.shape[-1])
  dx = taps.transpose(lambda t, dy: dy * rows[t], [dy], window, x.shape[1:-1], strides, padding,
                      dilation)
  # Every tap's products summed in one pass over x and dy (a variadic reduce), not one pass per
  # tap, which reads them once per tap. Along the last spatial dim only, then the rest: one long sequential sum
  # would lose float32 precision.
  slices = taps.windows(taps.pad(x, padding), window, strides, dilation)
  products = tuple(tap * dy for tap in slices)
  zero = jnp.zeros((), dy.dtype)
  sums = lax.reduce(products, (zero,) * len(products),
                    lambda a, b: tuple(p + q for p, q in zip(a, b)), (rank,))
  dkernel = jnp.stack([part.sum(tuple(range(rank))) for part in sums])
  return dx, dkernel.reshape(kernel.shape)


_mixed_shifts.defvjp(_mixed_shifts_forward, _mixed_shifts_backward)
