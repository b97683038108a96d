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
* ``'mixed'``: 'matmul' with backward passes of its own for CPUs (`cpu_rules`). 2-D float32
  convolutions with more than 16 input or output channels run forward, and backward to their input,
  as XLA's native convolution, which XLA's CPU backend hands to YNNPACK's direct kernels (the
  input's gradient as a forward convolution with the kernel flipped, so that YNNPACK takes it; a
  strided one's as one such convolution per phase of the stride, else the patches' transpose), and
  backward to the kernel as the patches' matrix product, the one gradient YNNPACK does not compute,
  built a cache-sized chunk of each device's batch at a time (a unit-stride first dim's taps as
  shifts of dy; a single input channel's planes all at once). On small maps with many channels,
  where much of the window falls on padding, these three are instead one matrix product per kernel
  tap with only the inputs it meets. A single input channel's other 2-D convolutions (few
  features) keep the planes of their forward product for the kernel gradient, the planes times
  dy. Float32 depthwise convolutions keep only their input for the backward pass, compute its
  gradient one phase of the stride at a time, and sum every tap's kernel gradient in one pass
  over it. Bfloat16 and float16 convolutions are converted to float32 first and the result back,
  so that these rules take them: XLA's CPU backend multiplies them in float32 anyway, converting
  each product's operands. Being `jax.custom_vjp` rules, they are reverse mode only: forward-mode
  derivatives (`jax.jvp`, `jax.jacfwd`, `jax.hessian`) need 'matmul' or 'xla'. Where a train step
  turns tuning on (`conv_form.tuning`), each of these convolutions is instead computed the way that
  measured fastest on this machine (`tuning`), as far as the run has the time to measure them.
* ``'auto'`` (default): 'mixed' on CPUs, 'xla' on GPUs and TPUs.

The plain forms are in `forms`, the CPU rules in `cpu_rules`; this module picks one (`form`).

The form is chosen per call (``convolve(..., impl=)``, the ``conv_impl`` field of `Conv` and
`DepthwiseConv`) or for everything traced inside ``with convolve.use(impl):`` (the training loop
uses ``config.conv_impl``). It is read when a function is traced: a function jitted under one form
keeps it. A jitted function whose batch is split over several devices says so with
``conv_form.split_batch(devices)`` (the train step does): 'mixed' then sums each device's share of
a kernel gradient on that device, where one sum over the whole batch would gather it to each.
"""

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

from cnn_jax import arithmetic, conv_form
# The form in force is `cnn_jax.conv_form`'s; these names are this module's too (convolve.use).
from cnn_jax.conv_form import IMPLS, resolve, use  # noqa: F401  pylint: disable=unused-import
from cnn_jax.layers import cpu_rules, forms, tuning


def form(impl: str | None, kernel_shape: Sequence[int], feature_group_count: int = 1,
         input_dilation: Sequence[int] | None = None, platform: str | None = None,
         dtype: jnp.dtype = jnp.float32, sizes: tuple[Sequence[int], Sequence[int]] | None = None
         ) -> str:
  """Which computation `convolve` runs: 'xla', 'dense' (1x1), 'patches' (im2col), 'shifts'
  (depthwise), or 'mixed', 'mixed_planes' and 'mixed_shifts' (`cpu_rules`' backward passes for
  CPUs, see the module docstring). ``sizes``: the (input, output) spatial sizes, where known."""
  impl = resolve(impl, platform)
  if impl == 'xla' or (input_dilation and any(d > 1 for d in input_dilation)):
    return 'xla'
  if cpu_rules.in_force(impl) and (
      rule := cpu_rules.rule(kernel_shape, feature_group_count, dtype, sizes)):
    return rule
  *window, per_group, features = kernel_shape
  if feature_group_count == 1:
    return 'dense' if math.prod(window) == 1 else 'patches'
  return 'shifts' if per_group == 1 and features == feature_group_count else 'xla'


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
  dtype = jnp.result_type(x, kernel)
  if dtype in cpu_rules.WIDENED and cpu_rules.in_force(impl):
    wide = convolve(x.astype(jnp.float32), kernel.astype(jnp.float32), strides=strides,
                    padding=padding, kernel_dilation=kernel_dilation,
                    input_dilation=input_dilation, feature_group_count=feature_group_count,
                    precision=precision, impl=impl)
    return wide.astype(dtype)
  rank = kernel.ndim - 2
  strides, dilation = tuple(strides), tuple(kernel_dilation)
  padding = tuple((lo, hi) for lo, hi in padding)
  input_dilation = tuple(input_dilation or (1,) * rank)
  window = kernel.shape[:rank]
  sizes = tuple((n - 1) * d + 1 for n, d in zip(x.shape[1:-1], input_dilation))
  out_sizes = arithmetic.conv_output_shape(sizes, window, strides, padding, dilation)
  computation = form(impl, kernel.shape, feature_group_count, input_dilation, dtype=dtype,
                     sizes=(sizes, out_sizes))
  batch_groups = conv_form.batch_groups()
  tuned = conv_form.tuned()
  if computation in cpu_rules.RULES and tuned.path:
    n = x.shape[0]
    share = (n // batch_groups if n % batch_groups == 0 else n, *x.shape[1:])
    chosen = tuning.choose(
        tuned.path, share, kernel.shape, strides, padding, dilation, dtype,
        cpu_rules.plans(computation, padding),
        lambda way, x, kernel: compute(way, x, kernel, strides, padding, dilation, precision),
        tuned.devices, tuning.differentiated(x, kernel), tuned.budget)
    computation = chosen or computation  # none where the run has no time to tune it
  return compute(computation, x, kernel, strides, padding, dilation, precision, input_dilation,
                 feature_group_count, batch_groups)


def compute(computation: str, x: jax.Array, kernel: jax.Array, strides: Sequence[int],
            padding: Sequence[tuple[int, int]], dilation: Sequence[int],
            precision: lax.PrecisionLike = None, input_dilation: Sequence[int] | None = None,
            feature_group_count: int = 1, batch_groups: int = 1) -> jax.Array:
  """The convolution computed the way ``computation`` names (`form`'s names, or one of
  `cpu_rules.plans`)."""
  if computation == 'xla':
    return forms.native(x, kernel, strides, padding, dilation, precision, input_dilation,
                        feature_group_count)
  if computation == 'mixed' or cpu_rules.plan(computation):
    return cpu_rules.mixed(x, kernel, strides, padding, dilation, precision, batch_groups,
                           cpu_rules.plan(computation))
  if computation == 'shifts':
    return forms.shift_sum(x, kernel, strides, padding, dilation)
  if computation == 'mixed_planes':
    return cpu_rules.mixed_planes(x, kernel, strides, padding, dilation, precision)
  if computation == 'mixed_shifts':
    return cpu_rules.mixed_shifts(x, kernel, strides, padding, dilation)
  return forms.patch_product(x, kernel, strides, padding, dilation, precision)
