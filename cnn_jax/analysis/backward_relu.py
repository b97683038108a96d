"""Other backward rules for ReLU (guided backprop, DeconvNet) in any model, without editing it.

A model's forward pass is traced to a jaxpr, and every `jax.nn.relu` in it (which flax's
``nn.relu`` is) is re-evaluated with a `jax.custom_vjp` ReLU whose backward pass follows the chosen
rule. Everything else is evaluated as traced, so max-pooling's gradient still routes to the
forward pass's switches, as Zeiler & Fergus's DeconvNet un-pooling does.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.extend import core as jex_core


def _guided(x, g):
  # Springenberg et al.: only positive gradients through units that were active.
  return g * (x > 0) * (g > 0)


def _deconvnet(x, g):
  # Zeiler & Fergus: the ReLU of the backward signal, whatever the forward unit did.
  del x
  return jnp.maximum(g, 0)


RULES = {'guided': _guided, 'deconvnet': _deconvnet}


def _relu_with(rule: Callable) -> Callable:
  @jax.custom_vjp
  def relu(x):
    return jnp.maximum(x, 0)

  relu.defvjp(lambda x: (jnp.maximum(x, 0), x), lambda x, g: (rule(x, g).astype(g.dtype),))
  return relu


def _is_relu(eqn) -> bool:
  if eqn.primitive.name != 'custom_jvp_call':
    return False
  info = eqn.params['call_jaxpr'].jaxpr.debug_info
  return info is not None and info.func_name == 'relu'


def _inner(eqn):
  """The single sub-jaxpr a call-like equation (jit, custom_jvp/vjp call, remat) runs, or None."""
  subs = [j for j in jex_core.jaxprs_in_params(eqn.params)]
  if len(subs) != 1 or len(subs[0].invars) != len(eqn.invars):
    return None
  return subs[0]


def _count_relus(jaxpr) -> int:
  total = 0
  for eqn in jaxpr.eqns:
    if _is_relu(eqn):
      total += 1
    else:
      total += sum(_count_relus(j) for j in jex_core.jaxprs_in_params(eqn.params))
  return total


def _bind(eqn, values):
  params = eqn.primitive.get_bind_params(eqn.params)
  # jax <= 0.10 returns (subfuns, params); later versions one dict holding the subfuns.
  if isinstance(params, tuple):
    subfuns, params = params
    return eqn.primitive.bind(*subfuns, *values, **params)
  return eqn.primitive.bind(*values, **params)


def _evaluate(jaxpr, consts, args, relu: Callable):
  env = {}

  def read(var):
    return var.val if isinstance(var, jex_core.Literal) else env[var]

  env.update(zip(jaxpr.constvars, consts))
  env.update(zip(jaxpr.invars, args))
  for eqn in jaxpr.eqns:
    values = [read(v) for v in eqn.invars]
    if _is_relu(eqn):
      outs = [relu(values[-1])]
    elif (inner := _inner(eqn)) is not None and _count_relus(inner):
      outs = _evaluate(inner, [], values, relu)
    elif any(_count_relus(j) for j in jex_core.jaxprs_in_params(eqn.params)):
      raise NotImplementedError(
          f'A ReLU inside `{eqn.primitive.name}` (a loop or branch) cannot take another backward '
          'rule; use saliency or integrated_gradients for this model.')
    else:
      outs = _bind(eqn, values)
      outs = outs if eqn.primitive.multiple_results else [outs]
    env.update(zip(eqn.outvars, outs))
  return [read(v) for v in jaxpr.outvars]


def with_backward_rule(fn: Callable, x: jax.Array, rule: str) -> Callable:
  """``fn`` (a function of one array) with every ReLU's backward pass replaced by ``rule``.

  Raises:
    ValueError: when ``fn`` computes no `jax.nn.relu` (the rule would change nothing).
  """
  closed = jax.make_jaxpr(fn)(x)
  if not _count_relus(closed.jaxpr):
    raise ValueError(f'The {rule} backward rule changes how ReLUs pass gradients, but this model '
                     'has no jax.nn.relu (e.g. a tanh LeNet-5); use saliency, '
                     'integrated_gradients or smoothgrad instead.')
  relu = _relu_with(RULES[rule])
  return lambda x: _evaluate(closed.jaxpr, closed.consts, [x], relu)[0]
