"""Convolution arithmetic: output sizes, padding, receptive fields, parameters and multiply-adds.

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

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.extend import core as jex_core

from cnn_jax import conv_form

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


# ---------------------------------------------------------------------------------------------
# summarize: the per-layer table of a real model, read off its traced computation.
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LayerSummary:
  """One leaf module of a model, or one pooling operation outside any leaf module.

  Attributes:
    name: the module path, '/'-joined (a pooling row adds e.g. 'max_pool_1' to its caller's).
    kind: the module's class name, or the pooling kind ('max_pool', 'avg_pool', 'pool',
      'global_max_pool', 'global_avg_pool').
    output_shape: shape of its (first) output.
    params: trainable parameters it owns.
    macs: multiply-adds of its convolutions and matrix products, for the summarised batch.
    receptive_field: per spatial dim, input pixels one output unit sees; None once the spatial
      layout is gone (after global pooling or flattening).
    jump: per spatial dim, input pixels between two adjacent output units (the effective
      stride); None where ``receptive_field`` is.
    notes: facts worth knowing, e.g. input rows a stride leaves unused.
  """
  name: str
  kind: str
  output_shape: tuple[int, ...]
  params: int
  macs: int
  receptive_field: tuple[float, ...] | None
  jump: tuple[float, ...] | None = None
  notes: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Summary:
  """`summarize`'s result: the rows, the totals, and `table()` to print them."""
  input_shape: tuple[int, ...]
  layers: tuple[LayerSummary, ...]
  total_params: int
  total_macs: int
  other_variables: int

  def table(self) -> str:
    def fmt_field(field):
      if field is None:
        return '-'
      return 'x'.join(f'{v:g}' for v in field)

    header = ('name', 'kind', 'output shape', 'params', 'MACs', 'receptive field', 'jump')
    body = [(row.name, row.kind, str(list(row.output_shape)), f'{row.params:,}', f'{row.macs:,}',
             fmt_field(row.receptive_field), fmt_field(row.jump)) for row in self.layers]
    body.append(('total', '', '', f'{self.total_params:,}', f'{self.total_macs:,}', '', ''))
    widths = [max(len(r[i]) for r in [header] + body) for i in range(len(header))]
    lines = ['  '.join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in
                       enumerate(zip(r, widths))) for r in [header] + body]
    lines.insert(1, '-' * len(lines[0]))
    lines.insert(len(lines) - 1, '-' * len(lines[0]))
    lines.append(f'input {list(self.input_shape)}; {self.total_macs / 1e9:.3f} GMACs; '
                 f'{self.other_variables:,} non-trainable variables (e.g. BatchNorm statistics)')
    for row in self.layers:
      lines.extend(f'note: {row.name}: {note}' for note in row.notes)
    return '\n'.join(lines)

  __str__ = table


def _field_merge(fields: list[Field]) -> Field:
  return max(fields, key=lambda f: f.size)


def _subjaxprs(eqn) -> list[Any]:
  found = []
  for value in eqn.params.values():
    if isinstance(value, jex_core.ClosedJaxpr):
      found.append(value.jaxpr)
    elif isinstance(value, jex_core.Jaxpr):
      found.append(value)
  return found


class _Tracer:
  """Walks a jaxpr: multiply-adds and receptive fields, attributed to module paths."""

  def __init__(self, rank: int):
    self.rank = rank
    self.fields: dict[Any, Field | None] = {}
    self.macs: dict[tuple[str, ...], int] = {}
    self.last_field: dict[tuple[str, ...], Field | None] = {}
    self.notes: dict[tuple[str, ...], list[str]] = {}
    self.count = 0  # equations seen: the order of the rows
    self.first_seen: dict[tuple[str, ...], int] = {}
    self.pools: list[tuple[int, tuple[str, ...], str, tuple[int, ...], Field | None]] = []

  def field(self, var) -> Field | None:
    return self.fields.get(var) if hasattr(var, 'aval') and not hasattr(var, 'val') else None

  def walk(self, jaxpr, path: tuple[str, ...]) -> None:
    for eqn in jaxpr.eqns:
      stack = str(eqn.source_info.name_stack)
      eqn_path = tuple(stack.split('/')[1:]) if stack else path
      subs = [j for j in _subjaxprs(eqn) if len(j.invars) == len(eqn.invars)]
      if subs:
        inner = subs[0]
        for outer_var, inner_var in zip(eqn.invars, inner.invars):
          self.fields[inner_var] = self.field(outer_var)
        self.walk(inner, eqn_path)
        outs = [self.field(v) for v in inner.outvars]
      else:
        self.first_seen.setdefault(eqn_path, self.count)
        outs = self.visit(eqn, eqn_path)
        pool = self.pool_kind(eqn)
        if pool:
          self.pools.append((self.count, eqn_path, pool, tuple(eqn.outvars[0].aval.shape),
                             outs[0]))
        self.count += 1
      for var, out in zip(eqn.outvars, outs):
        self.fields[var] = out
      for depth in range(len(eqn_path) + 1):
        self.last_field[eqn_path[:depth]] = outs[0] if outs else None

  def visit(self, eqn, path) -> list[Field | None]:
    name = eqn.primitive.name
    shapes = [tuple(getattr(v.aval, 'shape', ())) for v in eqn.invars]
    out_shape = tuple(eqn.outvars[0].aval.shape)
    in_field = next((self.field(v) for v in eqn.invars if self.field(v) is not None), None)
    if name == 'conv_general_dilated':
      p = eqn.params
      dn = p['dimension_numbers']
      lhs, rhs = shapes[0], shapes[1]
      kernel = [rhs[a] for a in dn.rhs_spec[2:]]
      in_spatial = [lhs[a] for a in dn.lhs_spec[2:]]
      lhs_dilation = tuple(p['lhs_dilation'] or (1,) * len(kernel))
      per_group = rhs[dn.rhs_spec[1]]
      if any(u > 1 for u in lhs_dilation):
        # A transposed convolution: count the products with real inputs, not the inserted zeros.
        macs = lhs[dn.lhs_spec[0]] * math.prod(in_spatial) * math.prod(kernel) * per_group * (
            rhs[dn.rhs_spec[0]])
      else:
        macs = math.prod(out_shape) * math.prod(kernel) * per_group
        geometry = conv_geometry(in_spatial, kernel, p['window_strides'], p['padding'],
                                 p['rhs_dilation'])
        if any(geometry.unused):
          self.notes.setdefault(path, []).append(
              f'input {"x".join(map(str, in_spatial))}, kernel {"x".join(map(str, kernel))}, '
              f'stride {"x".join(map(str, p["window_strides"]))}: {geometry.describe()}')
      self.macs[path] = self.macs.get(path, 0) + macs
      if in_field is None:
        return [None]
      return [in_field.then(kernel, p['window_strides'], p['rhs_dilation'],
                            [lo for lo, _ in p['padding']], lhs_dilation)]
    if name == 'dot_general':
      (contract, _), _ = eqn.params['dimension_numbers']
      self.macs[path] = self.macs.get(path, 0) + math.prod(out_shape) * math.prod(
          shapes[0][a] for a in contract)
    if name.startswith('reduce_window') and in_field is not None:
      p = eqn.params
      spatial = slice(1, 1 + self.rank)
      return [in_field.then(p['window_dimensions'][spatial], p['window_strides'][spatial],
                            p['window_dilation'][spatial],
                            [lo for lo, _ in p['padding'][spatial]], p['base_dilation'][spatial])]
    return [self.elementwise(eqn, v) for v in eqn.outvars]

  def pool_kind(self, eqn) -> str | None:
    """The pooling an equation is, if any: windows over the spatial dims, or a global reduction
    over exactly them."""
    name = eqn.primitive.name
    if name.startswith('reduce_window'):
      return {'reduce_window_max': 'max_pool', 'reduce_window_sum': 'avg_pool'}.get(name, 'pool')
    if name not in ('reduce_max', 'reduce_sum'):
      return None
    rank = len(getattr(eqn.invars[0].aval, 'shape', ()))
    if (rank == self.rank + 2 and
        tuple(eqn.params['axes']) == tuple(range(1, self.rank + 1))):
      return 'global_max_pool' if name == 'reduce_max' else 'global_avg_pool'
    return None

  def elementwise(self, eqn, out_var) -> Field | None:
    """Any other op: keeps the widest field of the inputs laid out like its output."""
    out_shape = tuple(out_var.aval.shape)
    if len(out_shape) != self.rank + 2:
      return None
    spatial = out_shape[1:-1]
    same, resized = [], []
    for var in eqn.invars:
      field = self.field(var)
      if field is None:
        continue
      in_spatial = tuple(var.aval.shape)[1:-1]
      (same if in_spatial == spatial else resized).append((field, in_spatial))
    if same:
      return _field_merge([f for f, _ in same])
    if resized:
      # A resize: units spread or crowd by the size ratio; the field itself does not change.
      field, in_spatial = resized[0]
      jump = tuple(j * i / o for j, i, o in zip(field.jump, in_spatial, spatial))
      return Field(field.size, jump, field.start)
    return None


def _rngs() -> dict:
  # Made inside the traces: an eager key is a compile of its own.
  return {'params': jax.random.key(0), 'dropout': jax.random.key(1),
          'stochastic_depth': jax.random.key(2)}


def _batched(model, input_shape: Sequence[int], dtype: Any, call_kwargs: dict) -> tuple:
  """``input_shape`` as [N, *S, C]: one example's [*S, C] (as `models.input_shape` gives it) gets
  a batch of 1, told apart by the spatial rank of the model's convolution kernels (flax would
  otherwise run it unbatched, its first dim taken for a spatial one), or by the model refusing
  it (a model that checks its input's rank); the trace then says what is wrong with either."""
  shape = tuple(input_shape)
  if len(shape) > 2 and shape[0] == 1:  # a batch of one, as the loop and the docs give it
    return shape
  x = jax.ShapeDtypeStruct(shape, dtype or jnp.float32)
  try:
    params = jax.eval_shape(lambda x: model.init(_rngs(), x, **call_kwargs), x).get('params', {})
  except Exception:  # pylint: disable=broad-except
    return (1, *shape)
  ranks = {leaf.ndim - 2 for path, leaf in jax.tree_util.tree_leaves_with_path(params)
           if getattr(path[-1], 'key', None) == 'kernel' and leaf.ndim >= 3}
  return (1, *shape) if ranks == {len(shape) - 1} else shape


def _trace(model, input_shape: Sequence[int], dtype: Any, call_kwargs: dict):
  """Traces ``model`` abstractly: (variables, {path: (kind, output shape)} in call order, tracer)."""
  x = jax.ShapeDtypeStruct(tuple(input_shape), dtype or jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(_rngs(), x, **call_kwargs), x)
  calls: dict[tuple[str, ...], tuple[str, tuple[int, ...]]] = {}

  def record(next_fun, args, kwargs, context):
    path = tuple(context.module.path)
    first_call = context.method_name == '__call__' and path not in calls
    if first_call:
      calls[path] = (type(context.module).__name__, ())  # Claims the slot: rows in call order.
    out = next_fun(*args, **kwargs)
    if first_call:
      leaves = jax.tree_util.tree_leaves(out)
      calls[path] = (calls[path][0], tuple(getattr(leaves[0], 'shape', ())) if leaves else ())
    return out

  def forward(variables, x):
    mutable = [c for c in variables if c != 'params']
    with nn.intercept_methods(record):
      return model.apply(variables, x, rngs=_rngs(), mutable=mutable, **call_kwargs)

  # Native convolutions: the trace shows the maths (kernels, strides), not the form computing it.
  with conv_form.use('xla'):
    closed = jax.make_jaxpr(forward)(variables, x)
  tracer = _Tracer(len(input_shape) - 2)
  tracer.fields[closed.jaxpr.invars[-1]] = Field.identity(len(input_shape) - 2)
  tracer.walk(closed.jaxpr, ())
  return variables, calls, tracer


def layer_fields(model, input_shape: Sequence[int], *, dtype: Any = None,
                 **call_kwargs) -> dict[str, Field]:
  """The receptive field (size, jump, start) of every module's output, by '/'-joined path.

  Traced like `summarize`; modules whose output has lost its spatial layout are left out.
  """
  input_shape = _batched(model, input_shape, dtype, call_kwargs)
  _, calls, tracer = _trace(model, input_shape, dtype, call_kwargs)
  fields = {'/'.join(path): tracer.last_field.get(path) for path in calls if path}
  return {name: field for name, field in fields.items() if field is not None}


def summarize(model, input_shape: Sequence[int], *, dtype: Any = None,
              print_fn=print, **call_kwargs) -> Summary:
  """Per-layer table of ``model`` on inputs of ``input_shape``, computed from the model itself.

  The model is traced abstractly (`jax.eval_shape` / `jax.make_jaxpr`), so even ImageNet-size
  networks cost no memory. Multiply-adds come from every convolution and matrix product in the
  trace, and receptive fields are propagated through the traced computation, so branches,
  shortcuts and concatenations are accounted for.

  Args:
    model: a flax linen module taking ``x`` of ``input_shape`` as its first argument.
    input_shape: [N, *spatial, C] (N may be 1), or one example's [*spatial, C] where the model
      tells the two apart (kernels of a fixed spatial rank, or a model that checks its input's
      rank); a model whose layers take their rank from the input (the zoo's int kernel sizes)
      needs the batch dimension.
    dtype: input dtype (default float32).
    print_fn: called with the table; ``None`` prints nothing.
    **call_kwargs: extra arguments of the model's ``__call__`` (e.g. ``train=False``).

  Returns:
    A `Summary` with one `LayerSummary` per leaf module, in call order, and the totals.
  """
  input_shape = _batched(model, input_shape, dtype, call_kwargs)
  variables, calls, tracer = _trace(model, input_shape, dtype, call_kwargs)

  def count(tree) -> int:
    return sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(tree))

  def params_at(path):
    node = variables.get('params', {})
    for key in path:
      if key not in node:
        return 0
      node = node[key]
    return count(node)

  leaves = [p for p in calls if not any(q[:len(p)] == p and q != p for q in calls)]
  # A module with no equations (dropout at inference) takes the place of the next one that has.
  positions, position = {}, tracer.count
  for path in reversed(leaves):
    position = min((i for p, i in tracer.first_seen.items() if p[:len(path)] == path),
                   default=position)
    positions[path] = position
  pooling_outside = [pool for pool in tracer.pools
                     if not any(leaf and pool[1][:len(leaf)] == leaf for leaf in leaves)]
  rows = []
  for path in leaves:
    if path == () and pooling_outside and not params_at(()):
      continue  # a model of pooling alone: its pooling rows say everything
    kind, shape = calls[path]
    field = tracer.last_field.get(path)
    macs = sum(m for p, m in tracer.macs.items() if p[:len(path)] == path)
    notes = tuple(n for p, ns in tracer.notes.items() if p[:len(path)] == path for n in ns)
    rows.append((positions[path], LayerSummary(
        '/'.join(path) or kind, kind, shape, params_at(path), macs, field.size if field else None,
        field.jump if field else None, notes)))
  named: dict[str, int] = {}
  for position, path, kind, shape, field in pooling_outside:  # a module's own has its row
    stem = '/'.join((*path, kind))
    named[stem] = named.get(stem, -1) + 1
    name = stem if not named[stem] else f'{stem}_{named[stem]}'
    rows.append((position, LayerSummary(name, kind, shape, 0, 0, field.size if field else None,
                                        field.jump if field else None)))
  rows = [row for _, row in sorted(rows, key=lambda r: r[0])]
  summary = Summary(tuple(input_shape), tuple(rows), count(variables.get('params', {})),
                    sum(tracer.macs.values()),
                    count({k: v for k, v in variables.items() if k != 'params'}))
  if print_fn is not None:
    print_fn(summary.table())
  return summary
