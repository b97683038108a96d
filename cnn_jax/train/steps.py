"""Pure train and eval steps, compiled for a mesh in one of two programming models.

'jit' (default): one global program; the batch is sharded over the 'data' axis, the state
replicated, and XLA inserts the collectives (BatchNorm sees the global batch).
'pmap': the per-device programming model - each device runs the step on its shard, gradients and
metrics are averaged with explicit `lax.pmean`, BatchNorm averages statistics over ``axis_name``.
It is written with `jax.shard_map` inside `jax.jit` (what `jax.pmap` is built on), so the state
stays one global array that Orbax saves like the other mode's.
"""

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax.training.dynamic_scale import DynamicScale
from jax import lax
from jax.sharding import Mesh, PartitionSpec

from cnn_jax import conv_form, host
from cnn_jax.data import augment, mixing
from cnn_jax.layers import tuning
from cnn_jax.train import losses, metrics, parallel
from cnn_jax.train.state import TrainState

AXIS = 'data'


def _step_key(seed: int, step: jax.Array, per_device: bool) -> jax.Array:
  key = jax.random.fold_in(jax.random.key(seed), step)
  return jax.random.fold_in(key, lax.axis_index(AXIS)) if per_device else key


def _rngs(key: jax.Array) -> dict:
  # The model's named streams; the input augmentation has its own, seeded in the data pipeline
  # (and `_MIXING` for the batch mixing done in the step).
  return {'dropout': jax.random.fold_in(key, 0), 'stochastic_depth': jax.random.fold_in(key, 1)}


_MIXING = 2


def initial_loss_scale(compute_dtype: str) -> DynamicScale | None:
  """float16's dynamic loss scale (its gradients underflow without one); None otherwise."""
  if compute_dtype != 'float16':
    return None
  return DynamicScale(fin_steps=jnp.zeros((), jnp.int32), scale=jnp.asarray(2.0**15, jnp.float32))


def _float32_outputs(outputs) -> tuple:
  """``(logits, *aux)`` in float32: the softmax and the loss keep full precision whatever the
  compute dtype."""
  outputs = outputs if isinstance(outputs, tuple) else (outputs,)
  return tuple(z.astype(jnp.float32) for z in outputs)


def tuning_file(config: ml_collections.ConfigDict) -> str | None:
  """The tuning file the train step of ``config`` reads and adds to (`host.tuning_file`); None
  where it is not tuned."""
  # Several processes must compile the same program: each timing its own choices might not.
  return (host.tuning_file() if config.get('tune_convolutions') and jax.process_count() == 1
          else None)


def make_train_step(model, tx: optax.GradientTransformation, schedule: optax.Schedule,
                    config: ml_collections.ConfigDict, mesh: Mesh,
                    constraint: optax.GradientTransformation | None = None,
                    steps_left: int | None = None, example_macs: int = 0) -> Callable:
  """``train_step(state, batch) -> (state, metrics)``, jitted, donating the old state.
  ``steps_left`` (the steps the run trains with it) and ``example_macs`` (the model's
  multiply-adds per example) bound the time its tracing spends tuning convolutions
  (`tuning.Budget`); ``steps_left=None``: no bound."""
  per_device = config.parallel.mode == 'pmap'
  loss_fn = losses.CLASSIFICATION_LOSSES[config.loss]

  mix_ops = augment.plan(config.data.augment.ops)['step']
  parts = config.grad_accum_steps

  def objective(params, batch_stats, rngs, images, labels, partner_labels, weight):
    variables = {'params': params}
    if batch_stats:
      variables['batch_stats'] = batch_stats
    # A linear probe (init.head_only) reads the frozen features as in evaluation.
    outputs, updates = model.apply(variables, images, train=not config.init.head_only, rngs=rngs,
                                   mutable=['batch_stats'])
    # Auxiliary classifiers (GoogLeNet) return (logits, *aux_logits) in training.
    logits, *aux = _float32_outputs(outputs)

    def loss_of(z):
      loss = loss_fn(z, labels, label_smoothing=config.label_smoothing)
      if weight is not None:  # mixed examples: the loss against both labels, by their shares
        loss = weight * loss + (1 - weight) * loss_fn(z, partner_labels,
                                                      label_smoothing=config.label_smoothing)
      return loss.mean()

    loss = loss_of(logits) + config.aux_loss_weight * sum(loss_of(z) for z in aux)
    accuracy = metrics.correct_top_k(logits, labels, 1).mean()
    # The loss again as aux: float16's scaled one may overflow where the loss itself does not.
    return loss, (loss, accuracy, updates.get('batch_stats', {}))

  def accumulated(params, batch_stats, rngs, images, labels, partner_labels, weight):
    """Gradients of the mean loss over ``parts`` sequential slices of the batch (each device
    slicing its own shard), as one slice of all of it would give without BatchNorm."""
    split = lambda x: x.reshape(x.shape[0] // parts, parts, *x.shape[1:]).swapaxes(0, 1)
    grad_fn = jax.value_and_grad(objective, has_aux=True)

    def part(carry, sliced):
      grads, loss, accuracy, batch_stats = carry
      index, *examples = sliced
      part_rngs = {name: jax.random.fold_in(key, index) for name, key in rngs.items()}
      (_, (part_loss, part_accuracy, batch_stats)), part_grads = grad_fn(
          params, batch_stats, part_rngs, *examples, weight)
      return (jax.tree_util.tree_map(jnp.add, grads, part_grads), loss + part_loss,
              accuracy + part_accuracy, batch_stats), None

    zero = jnp.zeros((), jnp.float32)
    (grads, loss, accuracy, batch_stats), _ = lax.scan(
        part, (jax.tree_util.tree_map(jnp.zeros_like, params), zero, zero, batch_stats),
        (jnp.arange(parts), *map(split, (images, labels, partner_labels))))
    mean = lambda x: x / parts
    return jax.tree_util.tree_map(mean, grads), (mean(loss), mean(accuracy), batch_stats)

  def update(state: TrainState, batch: dict):
    key = _step_key(config.seed, state.step, per_device)
    rngs = _rngs(key)
    images, labels, partner_labels, weight = batch['image'], batch['label'], batch['label'], None
    if mix_ops:
      images, weight = mixing.mix(jax.random.fold_in(key, _MIXING), images, mix_ops,
                                  config.data.augment)
      partner_labels = mixing.partner(labels)
    inputs = (images, labels, partner_labels, weight)
    dynamic_scale = state.dynamic_scale
    if dynamic_scale is None:
      if parts > 1:
        grads, (loss, accuracy, batch_stats) = accumulated(state.params, state.batch_stats, rngs,
                                                           *inputs)
      else:
        (_, (loss, accuracy, batch_stats)), grads = jax.value_and_grad(objective, has_aux=True)(
            state.params, state.batch_stats, rngs, *inputs)
      if per_device:
        grads = lax.pmean(grads, AXIS)
    else:
      # Differentiates the scaled loss; returns the gradients unscaled (averaged over devices) and
      # whether they are finite, i.e. whether to apply them.
      dynamic_scale, finite, (_, (loss, accuracy, batch_stats)), grads = (
          dynamic_scale.value_and_grad(objective, has_aux=True,
                                       axis_name=AXIS if per_device else None)(
                                           state.params, state.batch_stats, rngs, *inputs))
    if per_device:
      loss, accuracy = lax.pmean((loss, accuracy), AXIS)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    updates = jax.tree_util.tree_map(lambda u: u * state.lr_scale, updates)
    if constraint is not None:
      updates, _ = constraint.update(updates, constraint.init(state.params), state.params)
    params = optax.apply_updates(state.params, updates)
    if dynamic_scale is not None:
      # An overflowed step changes nothing but the scale (halved) and the step count.
      keep = lambda new, old: jax.tree_util.tree_map(
          lambda n, o: jnp.where(finite, n, o), new, old)
      params, opt_state = keep(params, state.params), keep(opt_state, state.opt_state)
      batch_stats = keep(batch_stats, state.batch_stats)
    ema = (jax.tree_util.tree_map(lambda e, p: config.ema_decay * e + (1 - config.ema_decay) * p,
                                  state.ema_params, params) if config.ema_decay else params)
    new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                              opt_state=opt_state, ema_params=ema, dynamic_scale=dynamic_scale)
    logs = {'loss': loss, 'accuracy': accuracy, 'grad_norm': optax.tree.norm(grads),
            'param_norm': optax.tree.norm(params),
            'learning_rate': schedule(state.step) * state.lr_scale}
    if dynamic_scale is not None:
      logs['loss_scale'] = dynamic_scale.scale
    return new_state, logs

  tuned = tuning_file(config)

  def step(state: TrainState, batch: dict):
    budget = (None if steps_left is None else
              tuning.Budget(steps_left, example_macs * config.batch_size // mesh.size))
    # The batch is split over the mesh's devices (a per-device program holds one share).
    with (conv_form.split_batch(1 if per_device else mesh.size),
          conv_form.tuning(tuned, mesh.size, budget)):
      return update(state, batch)

  if per_device:
    step = jax.shard_map(step, mesh=mesh, in_specs=(PartitionSpec(), PartitionSpec(AXIS)),
                         out_specs=(PartitionSpec(), PartitionSpec()), check_vma=False)
  return jax.jit(step, donate_argnums=0, out_shardings=(parallel.replicated(mesh),
                                                        parallel.replicated(mesh)))


def make_eval_step(model, loss: str, mesh: Mesh, per_device: bool = False) -> Callable:
  """``eval_step(variables, batch) -> sums`` of the loss, each applicable metric
  (`metrics.applicable`) and the count, masked.

  Per-pixel labels add the confusion matrix, from which `evaluate` computes the mean IoU.
  """
  loss_fn = losses.CLASSIFICATION_LOSSES[loss]

  def step(variables: dict, batch: dict):
    logits, *_ = _float32_outputs(model.apply(variables, batch['image'], train=False))
    mask = batch['mask']
    dense = batch['label'].ndim > 1
    sums = {metrics.LOSS: (loss_fn(logits, batch['label']) * mask).sum(), 'count': mask.sum()}
    for metric in metrics.applicable(dense, logits.shape[-1]):
      sums[metric.name] = (metric.fn(logits, batch['label']) * mask).sum()
    if dense:
      sums['confusion'] = metrics.confusion_matrix(logits, batch['label'], mask)
    return lax.psum(sums, AXIS) if per_device else sums

  if per_device:
    step = jax.shard_map(step, mesh=mesh, in_specs=(PartitionSpec(), PartitionSpec(AXIS)),
                         out_specs=PartitionSpec(), check_vma=False)
  return jax.jit(step, out_shardings=parallel.replicated(mesh))


def evaluate(eval_step: Callable, variables: dict, batches) -> dict[str, float]:
  """Runs ``eval_step`` over every batch; returns the per-example means and the count (and the
  mean IoU over the whole split for per-pixel labels)."""
  totals = None
  for batch in batches:
    sums = eval_step(variables, batch)
    totals = sums if totals is None else jax.tree_util.tree_map(jnp.add, totals, sums)
    # On CPU, a many-device collective left waiting on undispatched peers aborts: sync each batch.
    jax.block_until_ready(totals)
  totals = jax.device_get(totals)
  count = float(totals.pop('count'))
  confusion = totals.pop('confusion', None)
  results = {**{k: float(v) / count for k, v in totals.items()}, 'count': count}
  if confusion is not None:
    results[metrics.MEAN_IOU] = metrics.mean_iou(confusion)
  return results
