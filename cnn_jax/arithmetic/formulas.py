"""Convolution arithmetic in closed form: output sizes, padding, receptive fields, parameters
and multiply-adds.

Conventions (Dumoulin & Visin, "A guide to convolution arithmetic"), per spatial dimension:
input size ``i``, kernel ``k``, stride ``s``, dilation ``d`` (effective kernel ``d*(k-1)+1``) and padding
``(lo, hi)``. A convolution's output size is ``floor((i + lo + hi - d*(k-1) - 1) / s) + 1``.

Padding is given as one of
  * ``'VALID'``: no padding;
  * ``'SAME'``: TensorFlow's rule, output size ``ceil(i / s)``, the extra zero (if odd) at the end;
  * ``'HALF'``: ``floor(d*(k-1)/2)`` zeros on each side (PyTorch's ``padding=k//2``): for odd kernels
    the output size of 'SAME', with the windows centred on the same inputs at every stride;
  * ``'FULL'``: ``d*(k-1)`` zeros on each side, every partial overlap is an output;
  * ``'CAUSAL'``: 1-D only, all ``d*(k-1)`` zeros before the first element, so output ``t`` sees inputs ``<= t``;
  * an int ``p``: ``p`` zeros on both sides of every spatial dimension;
  * a sequence with one entry per spatial dimension, each an int or a ``(lo, hi)`` pair.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, Union

Padding = Union[str, int, Sequence[Union[int, tuple[int, int]]]]
PADDING_MODES = ('VALID', 'SAME', 'HALF', 'FULL', 'CAUSAL')


def as_tuple(value: int | Sequence[int], rank: int, name: str) -> tuple[int, ...]:
  """Broadcasts an int to ``rank`` dims, or checks that a sequence has ``rank`` entries."""
  if isinstance(value, int):
    return (value,) * rank
  value = tuple(int(v) for v in value)
  if len(value) != rank:
    raise ValueError(
        f'{name}={value} has {len(value)} entries but the input has {rank} spatial dimension(s); '
        f'give one int for all dimensions or exactly {rank} values.')
  return value


def padding_pairs(padding: Padding, input_size: Sequence[int], kernel_size: Sequence[int],
                  strides: int | Sequence[int] = 1,
                  dilation: int | Sequence[int] = 1) -> tuple[tuple[int, int], ...]:
  """Resolves any padding spec to explicit ``(lo, hi)`` zeros per spatial dimension."""
  rank = len(input_size)
  kernel_size = as_tuple(kernel_size, rank, 'kernel_size')
  strides = as_tuple(strides, rank, 'strides')
  dilation = as_tuple(dilation, rank, 'dilation')
  effective = [d * (k - 1) + 1 for k, d in zip(kernel_size, dilation)]
  if isinstance(padding, str):
    mode = padding.upper()
    if mode == 'VALID':
      return ((0, 0),) * rank
    if mode == 'HALF':
      return tuple(((e - 1) // 2, (e - 1) // 2) for e in effective)
    if mode == 'FULL':
      return tuple((e - 1, e - 1) for e in effective)
    if mode == 'CAUSAL':
      if rank != 1:
        raise ValueError(
            f"padding='CAUSAL' is defined for 1-D sequences, but the input has {rank} spatial "
            'dimensions; pass explicit (lo, hi) pairs instead, e.g. '
            f'{[(e - 1, 0) for e in effective]}.')
      return ((effective[0] - 1, 0),)
    if mode == 'SAME':
      pairs = []
      for i, s, e in zip(input_size, strides, effective):
        total = max((-(-i // s) - 1) * s + e - i, 0)
        pairs.append((total // 2, total - total // 2))
      return tuple(pairs)
    raise ValueError(f'padding={padding!r} is not a padding mode; expected one of {PADDING_MODES}, '
                     'an int, or one int or (lo, hi) pair per spatial dimension.')
  if isinstance(padding, int):
    return ((padding, padding),) * rank
  padding = list(padding)
  if len(padding) != rank:
    raise ValueError(f'padding={padding} has {len(padding)} entries but the input has {rank} '
                     f'spatial dimension(s); give one int or (lo, hi) pair per dimension.')
  pairs = []
  for p in padding:
    if isinstance(p, int):
      pairs.append((p, p))
    else:
      lo, hi = p
      pairs.append((int(lo), int(hi)))
  return tuple(pairs)


@dataclasses.dataclass(frozen=True)
class ConvGeometry:
  """Where a convolution or pooling window lands on one input.

  Attributes:
    output_size: spatial output size.
    padding: the explicit ``(lo, hi)`` padding per dimension.
    unused: per dimension, how many trailing input rows (after padding) no window ever covers;
      non-zero when the stride does not divide ``i + lo + hi - effective_kernel``.
  """
  output_size: tuple[int, ...]
  padding: tuple[tuple[int, int], ...]
  unused: tuple[int, ...]

  def describe(self) -> str:
    """A one-line account of the geometry, naming any input rows the stride leaves unused."""
    text = f'output {"x".join(map(str, self.output_size))}, padding {list(self.padding)}'
    if any(self.unused):
      text += (f'; the stride leaves the last {"x".join(map(str, self.unused))} padded input '
               'rows/columns unused (the windows do not tile the input)')
    return text


def conv_geometry(input_size: Sequence[int], kernel_size: int | Sequence[int],
                  strides: int | Sequence[int] = 1, padding: Padding = 'VALID',
                  dilation: int | Sequence[int] = 1) -> ConvGeometry:
  """Output size, padding and unused input of a convolution (or pooling window).

  Raises:
    ValueError: when no output is possible (the dilated kernel is wider than the padded input);
      the message shows the formula with the numbers.
  """
  input_size = tuple(int(i) for i in input_size)
  rank = len(input_size)
  kernel_size = as_tuple(kernel_size, rank, 'kernel_size')
  strides = as_tuple(strides, rank, 'strides')
  dilation = as_tuple(dilation, rank, 'dilation')
  for name, values in (('kernel_size', kernel_size), ('strides', strides), ('dilation', dilation)):
    if min(values) < 1:
      raise ValueError(f'{name}={values} must be positive in every dimension.')
  pads = padding_pairs(padding, input_size, kernel_size, strides, dilation)
  out, unused = [], []
  for axis, (i, k, s, d, (lo, hi)) in enumerate(zip(input_size, kernel_size, strides, dilation, pads)):
    effective = d * (k - 1) + 1
    span = i + lo + hi - effective
    if span < 0:
      raise ValueError(
          f'No output is possible along spatial dimension {axis}: the padded input '
          f'{i + lo + hi} (= {i} + {lo} + {hi}) is smaller than the dilated kernel {effective} '
          f'(= {d}*({k}-1)+1); output = floor((i + lo + hi - d*(k-1) - 1)/s) + 1 = '
          f'floor(({i} + {lo} + {hi} - {effective})/{s}) + 1 = {span // s + 1}. '
          'Use a smaller kernel or dilation, more padding, or a larger input.')
    out.append(span // s + 1)
    unused.append(span % s)
  return ConvGeometry(tuple(out), pads, tuple(unused))


def conv_output_shape(input_size: Sequence[int], kernel_size: int | Sequence[int],
                      strides: int | Sequence[int] = 1, padding: Padding = 'VALID',
                      dilation: int | Sequence[int] = 1) -> tuple[int, ...]:
  """Spatial output size of a convolution, ``floor((i + lo + hi - d*(k-1) - 1)/s) + 1``."""
  return conv_geometry(input_size, kernel_size, strides, padding, dilation).output_size


def pool_output_shape(input_size: Sequence[int], window_shape: int | Sequence[int],
                      strides: int | Sequence[int] | None = None,
                      padding: Padding = 'VALID') -> tuple[int, ...]:
  """Spatial output size of a pooling window; ``strides=None`` means 1, as in flax."""
  return conv_output_shape(input_size, window_shape, 1 if strides is None else strides, padding)


def conv_transpose_geometry(input_size: Sequence[int], kernel_size: int | Sequence[int],
                            strides: int | Sequence[int] = 1, padding: Padding = 0,
                            dilation: int | Sequence[int] = 1,
                            output_padding: int | Sequence[int] = 0) -> ConvGeometry:
  """Output size of a transposed convolution and the padding of the convolution it transposes.

  Output: ``(i-1)*s + d*(k-1) + 1 - lo - hi + output_padding``; with an int padding ``p`` this is
  PyTorch's ``(i-1)*s + d*(k-1) + 1 - 2p + output_padding``. ``padding`` means what it means for
  the forward convolution; 'SAME' means that convolution ran on an input of ``i*s`` (so the output
  is ``i*s``). A transposed convolution covers its whole output: ``unused`` is all zeros.

  Raises:
    ValueError: for an output_padding outside ``[0, max(stride, dilation))`` or no output.
  """
  input_size = tuple(int(i) for i in input_size)
  rank = len(input_size)
  kernel_size = as_tuple(kernel_size, rank, 'kernel_size')
  strides = as_tuple(strides, rank, 'strides')
  dilation = as_tuple(dilation, rank, 'dilation')
  output_padding = as_tuple(output_padding, rank, 'output_padding')
  same = isinstance(padding, str) and padding.upper() == 'SAME'
  forward_input = [i * s for i, s in zip(input_size, strides)] if same else input_size
  pads = padding_pairs(padding, forward_input, kernel_size, strides, dilation)
  out = []
  for axis, (i, k, s, d, (lo, hi), op) in enumerate(
      zip(input_size, kernel_size, strides, dilation, pads, output_padding)):
    if not 0 <= op < max(s, d):
      raise ValueError(f'output_padding={op} along dimension {axis} must be in [0, max(stride, '
                       f'dilation)) = [0, {max(s, d)}): it only picks among the input sizes '
                       'that the forward convolution maps to the same output size.')
    size = (i - 1) * s + d * (k - 1) + 1 - lo - hi + op
    if size < 1:
      raise ValueError(f'No output is possible along spatial dimension {axis}: (i-1)*s + d*(k-1) + 1 '
                       f'- lo - hi + output_padding = ({i}-1)*{s} + {d}*({k}-1) + 1 - {lo} - {hi} + '
                       f'{op} = {size}. Use less padding or a larger kernel or stride.')
    out.append(size)
  return ConvGeometry(tuple(out), pads, (0,) * rank)


def conv_transpose_output_shape(input_size: Sequence[int], kernel_size: int | Sequence[int],
                                strides: int | Sequence[int] = 1, padding: Padding = 0,
                                dilation: int | Sequence[int] = 1,
                                output_padding: int | Sequence[int] = 0) -> tuple[int, ...]:
  """Spatial output size of a transposed convolution (see `conv_transpose_geometry`)."""
  return conv_transpose_geometry(input_size, kernel_size, strides, padding, dilation,
                                 output_padding).output_size


@dataclasses.dataclass(frozen=True)
class Field:
  """Receptive field of one layer's units, per spatial dimension, in input pixels.

  Attributes:
    size: how many input pixels one unit sees (the receptive field).
    jump: distance in input pixels between two adjacent units (product of the strides so far).
    start: input coordinate of the centre of the first unit's field (pixel centres at 0, 1, ...);
      negative when the first field hangs over the padding.
  """
  size: tuple[float, ...]
  jump: tuple[float, ...]
  start: tuple[float, ...]

  @classmethod
  def identity(cls, rank: int) -> 'Field':
    return cls((1.0,) * rank, (1.0,) * rank, (0.0,) * rank)

  def then(self, kernel_size: Sequence[int], strides: Sequence[int], dilation: Sequence[int],
           padding_lo: Sequence[int], input_dilation: Sequence[int] | None = None) -> 'Field':
    """The field after one more window (convolution or pooling) on top of this one.

    ``input_dilation`` > 1 describes a transposed (fractionally strided) convolution: units of the
    input are spread ``input_dilation`` apart before the window slides.
    """
    input_dilation = input_dilation or (1,) * len(self.size)
    size, jump, start = [], [], []
    for r, j, c, k, s, d, lo, u in zip(self.size, self.jump, self.start, kernel_size, strides,
                                       dilation, padding_lo, input_dilation):
      j = j / u
      span = d * (k - 1)
      size.append(r + span * j)
      jump.append(j * s)
      start.append(c + (span / 2 - lo) * j)
    return Field(tuple(size), tuple(jump), tuple(start))


def receptive_fields(layers: Sequence[dict[str, Any]], input_size: Sequence[int]) -> list[Field]:
  """Receptive field, jump and start of every layer of a stack of windows.

  Args:
    layers: one dict per layer with ``kernel_size`` and optionally ``strides``, ``padding`` (any
      padding spec) and ``dilation``; pooling layers are windows too.
    input_size: spatial size of the stack's input (needed to resolve 'SAME' padding).

  Returns:
    One ``Field`` per layer, the field of that layer's output units.
  """
  rank = len(input_size)
  field, size, fields = Field.identity(rank), tuple(input_size), []
  for layer in layers:
    k = as_tuple(layer['kernel_size'], rank, 'kernel_size')
    s = as_tuple(layer.get('strides', 1), rank, 'strides')
    d = as_tuple(layer.get('dilation', 1), rank, 'dilation')
    geometry = conv_geometry(size, k, s, layer.get('padding', 'VALID'), d)
    field = field.then(k, s, d, [lo for lo, _ in geometry.padding])
    size = geometry.output_size
    fields.append(field)
  return fields


def conv_params(kernel_size: Sequence[int], in_features: int, features: int,
                feature_group_count: int = 1, use_bias: bool = True) -> int:
  """Weights ``prod(k) * in/groups * out`` plus ``out`` biases."""
  return math.prod(kernel_size) * (in_features // feature_group_count) * features + (
      features if use_bias else 0)


def conv_macs(output_size: Sequence[int], kernel_size: Sequence[int], in_features: int,
              features: int, feature_group_count: int = 1) -> int:
  """Multiply-adds of one example: every output value is a ``prod(k) * in/groups`` dot product."""
  return math.prod(output_size) * features * math.prod(kernel_size) * (
      in_features // feature_group_count)
