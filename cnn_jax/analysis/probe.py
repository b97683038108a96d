"""Reaching inside any linen model without editing it: outputs, target scores, layer activations.

Layers are named by their module path joined with '/', as `feature_maps` returns them and
`cnn_jax.arithmetic.summarize` prints them (e.g. 'ConvNormAct_0/Conv_0').
"""

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp


def outputs(model: nn.Module, variables: dict, x: jax.Array) -> jax.Array:
  """The model's logits in eval mode ([N, K], or [N, *S, K] for dense prediction)."""
  out = model.apply(variables, x, train=False)
  return out[0] if isinstance(out, tuple) else out


def targets(model: nn.Module, variables: dict, x: jax.Array, target) -> jax.Array:
  """``target`` as one class per example: an int, one int per example, or None (the predicted
  class; for dense prediction the class predicted most often over the example's pixels)."""
  if target is not None:
    return jnp.broadcast_to(jnp.asarray(target, jnp.int32), (x.shape[0],))

  @jax.jit
  def predicted(x):
    logits = outputs(model, variables, x)
    if logits.ndim == 2:
      return jnp.argmax(logits, -1)
    classes = logits.shape[-1]
    votes = jax.nn.one_hot(jnp.argmax(logits, -1), classes).reshape(x.shape[0], -1, classes)
    return jnp.argmax(votes.sum(1), -1)

  return predicted(x)


def class_score(values: jax.Array, target: jax.Array) -> jax.Array:
  """[N] the target class's value per example; for dense outputs its mean over the pixels."""
  picked = jnp.take_along_axis(values, target.reshape(-1, *([1] * (values.ndim - 1))), axis=-1)
  return picked.reshape(values.shape[0], -1).mean(-1)


def score_fn(model: nn.Module, variables: dict, target: jax.Array) -> Callable:
  """``f(x) -> sum over examples of the target logit``: its input gradient is every example's
  own gradient (examples do not interact in eval mode)."""
  return lambda x: class_score(outputs(model, variables, x), target).sum()


def _path(context) -> str:
  return '/'.join(context.module.path)


def feature_maps(model: nn.Module, variables: dict, x: jax.Array,
                 layers: list[str] | None = None) -> dict[str, jax.Array]:
  """``{layer: output}`` of every submodule (or of ``layers``), in the order they ran.

  Uses flax's intermediates machinery, so any registered model works unchanged.
  """
  wanted = None if layers is None else set(layers)
  found: dict[str, jax.Array] = {}

  def record(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    path = _path(context)
    if context.method_name == '__call__' and path and (wanted is None or path in wanted):
      found.setdefault(path, out[0] if isinstance(out, (tuple, list)) else out)
    return out

  with nn.intercept_methods(record):
    model.apply(variables, x, train=False)
  if wanted is not None and wanted - set(found):
    raise ValueError(f'No layer named {sorted(wanted - set(found))} in {type(model).__name__}; '
                     f'its layers are: {", ".join(layer_names(model, variables, x))}.')
  return found


def layer_shapes(model: nn.Module, variables: dict,
                 x: jax.Array) -> dict[str, jax.ShapeDtypeStruct]:
  """``{layer: output shape}`` of every submodule in call order, traced abstractly (no compute)."""
  ordered = {}

  def trace(variables, x):
    # Recorded here: a dict returned through jax comes back sorted by key, not in call order.
    ordered.update({name: jax.ShapeDtypeStruct(a.shape, a.dtype)
                    for name, a in feature_maps(model, variables, x).items()})

  jax.eval_shape(trace, variables, x)
  return ordered


def layer_names(model: nn.Module, variables: dict, x: jax.Array) -> list[str]:
  """Every submodule path, in call order."""
  return list(layer_shapes(model, variables, x))


def with_layer_delta(model: nn.Module, variables: dict, layer: str) -> Callable:
  """``f(x, delta) -> (logits, activation)``: the model with ``delta`` added to ``layer``'s output.

  Differentiating with respect to ``delta`` at zero gives the gradient at that layer (Grad-CAM),
  without the model having to expose the layer.
  """

  def forward(x, delta):
    seen = {}

    def add(next_fun, args, kwargs, context):
      out = next_fun(*args, **kwargs)
      if context.method_name == '__call__' and _path(context) == layer and 'a' not in seen:
        seen['a'] = out
        out = out + delta
      return out

    with nn.intercept_methods(add):
      logits = outputs(model, variables, x)
    return logits, seen['a']

  return forward


def head_input(model: nn.Module, variables: dict, x: jax.Array) -> jax.Array:
  """The input of the last module the model calls (its head): the last hidden features."""
  inputs = []

  def record(next_fun, args, kwargs, context):
    if context.method_name == '__call__' and context.module.path and args:
      inputs.append(args[0])
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record):
    model.apply(variables, x, train=False)
  return inputs[-1]
