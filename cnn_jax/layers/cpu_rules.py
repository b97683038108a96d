"""The CPU rules of the 'mixed' convolution form (`cnn_jax.layers.convolve` describes it):
forward passes that skip the padding on small maps, and backward passes of their own that keep
XLA's CPU backend on YNNPACK's kernels and on its multi-threaded matrix products. `rule` says
which convolutions they take; `in_force` whether they apply at all (max pooling's backward rule
asks it too). Being `jax.custom_vjp` rules, they are reverse mode only. The measurements behind
each threshold: docs/performance.md, "CPU"."""

import functools
import itertools
import math
from collections.abc import Iterator, Sequence

import jax
import jax.numpy as jnp
from jax import lax

from cnn_jax import arithmetic, conv_form
from cnn_jax.layers import forms, taps

# Bytes of copies per chunk of the kernel gradient's product: a chunk's copies stay in the CPU's
# caches (a few per-core L2s' worth, well under the shared L3), where all at once would be written
# to memory and read back. Not tuned: the time is flat over a wide range of sizes around it
# (docs/performance.md), which other CPUs' caches fall inside.
CHUNK_BYTES = 3 * 2**20
# Shares of a window's products that meet inputs rather than padding, under which the tap by tap
# forms win: the forward pass by tap products (`direct`, against YNNPACK's direct kernels, which
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
# Floats XLA's CPU backend multiplies in float32, converting the operands of each of their
# convolutions and matrix products: `cnn_jax.layers.convolve` converts them to float32 first, so
# that these rules, written for float32, take them.
WIDENED = (jnp.bfloat16, jnp.float16)
# What `rule` names: the convolutions these rules compute (each way `plans` lists, where tuned).
RULES = ('mixed', 'mixed_planes', 'mixed_shifts')


def in_force(impl: str | None = None, platform: str | None = None) -> bool:
  """Whether the CPU rules apply to what is traced now: the form ``impl`` (default: the one in
  `conv_form.use`) is 'mixed', as 'auto' is on CPUs."""
  return conv_form.resolve(impl, platform) == 'mixed'


def rule(kernel_shape: Sequence[int], feature_group_count: int, dtype: jnp.dtype,
         sizes: tuple[Sequence[int], Sequence[int]] | None = None) -> str | None:
  """The rule that computes a convolution of this kernel [*K, C/groups, F] where they are in
  force: 'mixed' (a 2-D float32 convolution YNNPACK takes), 'mixed_planes' (any other 2-D float32
  one from a single input channel), 'mixed_shifts' (a float32 depthwise one), or None (a plain
  form of `forms`). ``sizes``: the (input, output) spatial sizes, where known."""
  *window, per_group, features = kernel_shape
  if dtype != jnp.float32:
    return None
  if feature_group_count == 1:
    # Other ranks stay plain: in 1-D, a single input channel's rule measured level with them.
    if len(window) != 2 or math.prod(window) == 1:
      return None
    # What XLA's CPU backend gives YNNPACK; it runs any other convolution on one core itself.
    if (max(per_group, features) > DIRECT_MIN_CHANNELS and
        (sizes is None or _direct_takes(window, *sizes))):
      return 'mixed'
    return 'mixed_planes' if per_group == 1 else None
  return 'mixed_shifts' if per_group == 1 and features == feature_group_count else None


# Ways to compute a convolution that `rule` gives to 'mixed': the plain patches' product, or the
# rule with each forward pass ('direct': YNNPACK's kernels; 'taps': a product per tap over the
# inputs it meets) and each kernel gradient ('patches' or 'taps'), written 'mixed/FORWARD/GRADIENT'.
# A single input channel's: the rule, or the plain planes' product. A depthwise one's: the plain
# shifted sum, or the rule.
PATCHES, SHIFTS = 'patches', 'shifts'


def plans(rule_name: str, padding: Sequence[tuple[int, int]]) -> tuple[str, ...]:
  """What a convolution that ``rule_name`` takes can be computed as, the rule's own first; the
  tap products differ from the direct kernels only where the window meets ``padding``."""
  if rule_name == 'mixed_shifts':
    return ('mixed_shifts', SHIFTS)
  if rule_name == 'mixed_planes':
    return ('mixed_planes', PATCHES)
  ways = [('direct', 'patches')]
  if any(lo > 0 or hi > 0 for lo, hi in padding):
    ways += [('taps', 'patches'), ('direct', 'taps'), ('taps', 'taps')]
  return (*(f'mixed/{forward}/{gradient}' for forward, gradient in ways), PATCHES)


def plan(name: str) -> tuple[str, str] | None:
  """A 'mixed/FORWARD/GRADIENT' name's (forward, kernel gradient); None for any other."""
  parts = name.split('/')
  return (parts[1], parts[2]) if parts[0] == 'mixed' and len(parts) == 3 else None


def _direct_takes(window: Sequence[int], sizes: Sequence[int], out_sizes: Sequence[int]) -> bool:
  """Whether YNNPACK takes a convolution of this window from inputs of ``sizes`` to outputs of
  ``out_sizes``: neither the window nor the output larger than the (unpadded) input."""
  return all(k <= n and m <= n for k, n, m in zip(window, sizes, out_sizes))


def direct(x, kernel, strides, padding, dilation, precision, how: str | None = None) -> jax.Array:
  """A 'mixed' convolution computed forward: by YNNPACK's direct kernels (XLA's native
  convolution), or, where much of the window falls on padding, as one product per tap with only
  the inputs it meets. YNNPACK multiplies the padding's zeros too, a large share of the products on
  small maps. The tap products' matrix products take the input's channels as their depth and
  write one output per tap, which costs more the fewer the channels: they are taken where the
  share of products that meet inputs is under `DIRECT_MET` (the layers where they measured faster:
  docs/performance.md), or as ``how`` says ('direct' or 'taps': a `plan`'s, measured here)."""
  window = kernel.shape[:kernel.ndim - 2]
  out_sizes = arithmetic.conv_output_shape(x.shape[1:-1], window, strides, padding, dilation)
  reached, met = _met(x.shape, out_sizes, window, strides, padding, dilation)
  if how == 'direct' or (how is None and met >= DIRECT_MET):
    return forms.native(x, kernel, strides, padding, dilation, precision)
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


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5, 6, 7))
def mixed(x, kernel, strides, padding, dilation, precision, batch_groups,
          plan: tuple[str, str] | None = None) -> jax.Array:
  """A 2-D convolution forward by `direct`, backward by YNNPACK's kernels to the input and the
  patches' product to the kernel (`_patch_gradient`); ``batch_groups``: as in `convolve`;
  ``plan``: (forward, kernel gradient) as `plan` names them, None for the thresholds' choice."""
  del batch_groups  # the backward pass's
  return direct(x, kernel, strides, padding, dilation, precision, plan and plan[0])


def _mixed_forward(x, kernel, strides, padding, dilation, precision, batch_groups, plan):
  del batch_groups
  return direct(x, kernel, strides, padding, dilation, precision, plan and plan[0]), (x, kernel)


def _mixed_backward(strides, padding, dilation, precision, batch_groups, plan, residuals, dy):
  x, kernel = residuals
  rank = kernel.ndim - 2
  window = kernel.shape[:rank]
  # XLA's own transpose reverses the window, and dilates a strided one's dy, neither of which
  # YNNPACK takes: a flipped kernel's forward convolution of dy per phase of the stride.
  if phases := _stride_phases(window, x.shape[1:-1], dy.shape[1:-1], strides, padding, dilation):
    dx = _phase_input_gradient(dy, kernel, x.shape[1:-1], strides, dilation, phases, precision)
  else:  # a kernel both dilated and strided, or a phase's window or output larger than dy
    dx = _patch_input_gradient(x, kernel, dy, strides, padding, dilation, precision)
  return dx, _patch_gradient(x, dy, window, strides, padding, dilation, precision, batch_groups,
                             plan and plan[1])


mixed.defvjp(_mixed_forward, _mixed_backward)


def _patch_input_gradient(x, kernel, dy, strides, padding, dilation, precision) -> jax.Array:
  """The input's gradient as autodiff's transpose of the patches' product (XLA drops the forward
  product it traces)."""
  _, transpose = jax.vjp(lambda x: forms.patch_product(x, kernel, strides, padding, dilation,
                                                       precision), x)
  dx, = transpose(dy)
  return dx


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
  take a unit-stride convolution of dy with the taps that reach them, flipped (`direct`), and the
  phases are interleaved: each phase a dense convolution, where the patches' product's transpose
  and col2im would scatter (several times slower on ResNet-18's strided layers:
  docs/performance.md)."""
  rank = kernel.ndim - 2
  parts = []
  for dims in itertools.product(*phases):
    sub = kernel[tuple(taps_slice for taps_slice, _ in dims)]
    parts.append(direct(dy, jnp.flip(sub, tuple(range(rank))).swapaxes(-1, -2), (1,) * rank,
                         tuple(pads for _, pads in dims), dilation, precision))
  return taps.interleave(parts, strides)[(slice(None), *(slice(0, n) for n in sizes))]


def _patch_gradient(x, dy, window, strides, padding, dilation, precision, batch_groups,
                    how: str | None = None) -> jax.Array:
  """The kernel's gradient: dy's transpose times the patches, summed over chunks of the batch
  whose copies stay in the CPU's cache. All the patches at once (ResNet-18's first layers: a
  hundred megabytes and more) cost more to write and read back than the product itself.

  Where the first spatial dim has unit stride, its taps are shifts of dy rather than copies of x:
  dy shifted by each of them (rows: tap, feature) times x's patches along the other dims
  (columns: their taps, channel) gives each (tap, channel, feature) sum once, from 3 + 3 copies of
  a 3x3 kernel's inputs rather than 1 + 9."""
  n, features = x.shape[0], dy.shape[-1]
  if x.shape[-1] == 1:  # the planes, only taps x the input, at once
    return _plane_gradient(forms.tap_planes(x, window, strides, padding, dilation), dy,
                           precision).reshape(*window, 1, features)
  # One group per device, each looping over its own chunks: a loop over the whole batch would
  # gather it to every device.
  groups = batch_groups if n % batch_groups == 0 else 1
  x = x.reshape(groups, n // groups, *x.shape[1:])
  dy = dy.reshape(groups, n // groups, *dy.shape[1:])
  reached, met = _met(x.shape[1:], dy.shape[2:-1], window, strides, padding, dilation)
  if how == 'taps' or (how is None and met < TAP_GRADIENT_MET):
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
              if per_group % d == 0 and (d == 1 or d * image_bytes <= CHUNK_BYTES))
  zero = jnp.zeros((), dy.dtype)

  def accumulate(i, total):
    part = lambda z: lax.dynamic_slice_in_dim(z, i * chunk, chunk, axis=1)
    x_part = part(x).reshape(groups * chunk, *x.shape[2:])
    patches = forms.tap_patches(taps.pad(x_part, x_padding), x_window, strides, dilation)
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


def _plane_gradient(planes, dy, precision) -> jax.Array:
  """A single input channel's kernel gradient [taps, F]: its planes [taps, N, *S_out, 1] times dy
  [N, *S_out, F], contracted as YNNPACK takes them at its matrix-product rate. Autodiff's transpose
  of `forms.plane_product` contracts dy transposed and the planes over both their last dims,
  which XLA's CPU backend also gives YNNPACK, at a fraction of that rate (LeNet-5's first layer:
  docs/performance.md)."""
  return jnp.dot(planes.reshape(len(planes), -1), dy.reshape(-1, dy.shape[-1]),
                 precision=precision)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def mixed_planes(x, kernel, strides, padding, dilation, precision) -> jax.Array:
  """A single input channel's convolution that YNNPACK does not take, forward as its planes'
  product (`forms.plane_product`), the planes kept for the kernel gradient (`_plane_gradient`)."""
  return forms.patch_product(x, kernel, strides, padding, dilation, precision)


def _mixed_planes_forward(x, kernel, strides, padding, dilation, precision):
  planes = forms.tap_planes(x, kernel.shape[:kernel.ndim - 2], strides, padding, dilation)
  return forms.plane_product(planes, kernel, precision), (x, planes, kernel)


def _mixed_planes_backward(strides, padding, dilation, precision, residuals, dy):
  x, planes, kernel = residuals
  # A network's first layer, whose images take no gradient, has its input gradient dropped.
  return (_patch_input_gradient(x, kernel, dy, strides, padding, dilation, precision),
          _plane_gradient(planes, dy, precision).reshape(kernel.shape))


mixed_planes.defvjp(_mixed_planes_forward, _mixed_planes_backward)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def mixed_shifts(x, kernel, strides, padding, dilation) -> jax.Array:
  return forms.shift_sum(x, kernel, strides, padding, dilation)


def _mixed_shifts_forward(x, kernel, strides, padding, dilation):
  # Only x is kept: autodiff of the shifts would keep every tap's slice, one copy of x each.
  return forms.shift_sum(x, kernel, strides, padding, dilation), (x, kernel)


def _mixed_shifts_backward(strides, padding, dilation, residuals, dy):
  x, kernel = residuals
  rank = kernel.ndim - 2
  window = kernel.shape[:rank]
  rows = kernel.reshape(-1, kernel.shape[-1])
  dx = taps.transpose(lambda t, dy: dy * rows[t], [dy], window, x.shape[1:-1], strides, padding,
                      dilation)
  # Every tap's products summed in one pass over x and dy (a variadic reduce), not one pass per
  # tap, which reads them once per tap. Along the last spatial dim only, then the rest: one long
  # sequential sum would lose float32 precision.
  slices = taps.windows(taps.pad(x, padding), window, strides, dilation)
  products = tuple(tap * dy for tap in slices)
  zero = jnp.zeros((), dy.dtype)
  sums = lax.reduce(products, (zero,) * len(products),
                    lambda a, b: tuple(p + q for p, q in zip(a, b)), (rank,))
  dkernel = jnp.stack([part.sum(tuple(range(rank))) for part in sums])
  return dx, dkernel.reshape(kernel.shape)


mixed_shifts.defvjp(_mixed_shifts_forward, _mixed_shifts_backward)
