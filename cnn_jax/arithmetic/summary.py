"""`summarize` and `layer_fields`: the per-layer table of a real model, read off its traced
computation (multiply-adds and receptive fields attributed to module paths), using the closed-form
rules of `formulas` for each convolution and pooling window it meets."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.extend import core as jex_core

from cnn_jax import conv_form
from cnn_jax.arithmetic.formulas import Field, conv_geometry


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
