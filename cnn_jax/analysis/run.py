"""`load_run(workdir)`: a finished or running experiment, opened for analysis in one line.

    run = load_run('runs/digits')               # or step='best' / an int
    logits = run.apply(images)                   # jitted, eval mode
    run.evaluate('test')                         # == final_metrics.json's last test figures

Only what inference needs is restored (params and BatchNorm statistics, or the EMA parameters
when the run evaluated them), read-only, onto one device by default: a run trained on any number
of devices or hosts opens on a laptop, also while its training still writes to the workdir.
"""

import collections
import dataclasses
import functools
import json
import os
import subprocess
import sys
from collections.abc import Iterator

import flax.linen as nn
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from cnn_jax.data import images as images_lib
from cnn_jax.data import pipeline, sources
from cnn_jax.train import checkpoint, loop, parallel, steps
from cnn_jax.train.workdir import read_config


class Applies:
  """``apply(x)``: a network's jitted eval-mode output, for anything with ``model`` and
  ``variables``."""

  @functools.cached_property
  def _apply(self):
    return jax.jit(lambda variables, x: self.model.apply(variables, x, train=False))

  def apply(self, x) -> jax.Array:
    """The model's eval-mode output on a batch ``x`` [N, *S, C] (normalised like the data)."""
    return self._apply(self.variables, x)


@dataclasses.dataclass
class Run(Applies):
  """One training run, opened for analysis.

  Attributes:
    workdir: the run directory.
    config: its config (``config.json``).
    model: the model as the run built it (`loop.build_model`: its compute dtype; no per-device
      BatchNorm axis).
    variables: ``{'params', 'batch_stats'?}`` at ``step``.
    step: the checkpoint's step.
    mesh: the devices evaluation runs on.
  """
  workdir: str
  config: ml_collections.ConfigDict
  model: nn.Module
  variables: dict
  step: int
  mesh: jax.sharding.Mesh

  def steps(self) -> list[int]:
    """Every step that has a complete checkpoint now (training may still be adding some)."""
    with checkpoint.quiet():
      return checkpoint.manager(self.workdir, read_only=True).all_steps()

  @functools.cached_property
  def splits(self) -> dict[str, str]:
    """``{'train', 'val', 'test'}``: the split specs the run trained, validated and tested on
    (``''``: no test split)."""
    return sources.run_splits(self.config.data)

  def _source(self, split: str) -> sources.Source:
    spec = self.splits.get(split, split)
    if not spec:
      raise ValueError(f"The run in {self.workdir} has no {split} split (its splits: "
                       f'{self.splits}); name another, or any split spec of {self.config.data.name}.')
    return sources.for_config(self.config.data, spec)

  def preprocess(self, images) -> np.ndarray:
    """Model inputs from raw examples as the dataset stores them (uint8 pixels, or the dataset's
    own floats; images of any size, or encoded JPEG / PNG bytes, for a dataset of variable-size
    images): the run's evaluation crop where it has one, then its normalisation."""
    data = self.config.data
    shape = self._source('train').example_shape
    if None in shape:
      images = [images_lib.center_crop(image, data.image_size, data.crop_fraction, shape[-1])
                for image in images]
    return np.asarray(pipeline.normalize(np.stack([np.asarray(i) for i in images]), data))

  def eval_batches(self, split: str = 'val') -> Iterator[dict]:
    """The run's evaluation pipeline (no augmentation, normalised) over ``split`` ('train',
    'val', 'test' as the run used them, or any split spec of its dataset): numpy
    ``{'image', 'label'}`` batches holding every example once."""
    for batch in pipeline.eval_batches(self._source(split), self.config, self.mesh):
      batch = jax.device_get(batch)
      keep = batch['mask'] > 0
      yield {'image': batch['image'][keep], 'label': batch['label'][keep]}

  def predict(self, split: str = 'val') -> dict[str, np.ndarray]:
    """``{'image', 'label', 'logits'}`` of every example of ``split``, concatenated."""
    parts = collections.defaultdict(list)
    for batch in self.eval_batches(split):
      parts['image'].append(batch['image'])
      parts['label'].append(batch['label'])
      parts['logits'].append(np.asarray(self.apply(batch['image'])))
    return {k: np.concatenate(v) for k, v in parts.items()}

  def evaluate(self, split: str = 'val') -> dict[str, float]:
    """The training loop's own evaluation (same step, same masking): at the final step it
    reproduces ``final_metrics.json``'s ``last`` figures of ``split`` ('val', 'test' or a spec)."""
    eval_step = steps.make_eval_step(self.model, self.config.loss, self.mesh)
    replicated = jax.device_put(self.variables, parallel.replicated(self.mesh))
    return steps.evaluate(eval_step, replicated,
                          pipeline.eval_batches(self._source(split), self.config, self.mesh))

  def history(self) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """``{'train' | 'val': {name: (steps, values)}}`` from ``metrics.jsonl``, each step once
    (the latest record wins where a resumed run logged a step again)."""
    records = collections.defaultdict(dict)
    path = os.path.join(self.workdir, 'metrics.jsonl')
    if os.path.exists(path):
      with open(path, encoding='utf-8') as f:
        for line in f:
          if line.strip():
            record = json.loads(line)
            # Runs from before the validation split logged it as 'eval'.
            split = record.pop('split')
            records['val' if split == 'eval' else split][record.pop('step')] = record
    history = {}
    for split, by_step in records.items():
      order = sorted(by_step)
      names = sorted({name for record in by_step.values() for name in record})
      history[split] = {name: (np.asarray([s for s in order if name in by_step[s]]),
                               np.asarray([by_step[s][name] for s in order if name in by_step[s]],
                                          np.float64)) for name in names}
    return history


def _check_shapes(abstract: dict, saved, step: int, workdir: str) -> None:
  """The config must rebuild exactly the checkpointed parameters, else say which differ."""
  def shapes(tree):
    return {jax.tree_util.keystr(p): tuple(leaf.shape)
            for p, leaf in jax.tree_util.tree_leaves_with_path(tree)}
  want, have = shapes(abstract), shapes({k: saved[k] for k in abstract if k in saved})
  differences = [f'{k}: config {want.get(k)} vs checkpoint {have.get(k)}'
                 for k in sorted(set(want) | set(have)) if want.get(k) != have.get(k)]
  if differences:
    raise ValueError(
        f'config.json of {workdir} no longer builds the model saved at step {step} '
        f'({len(differences)} parameter(s) differ, e.g. {differences[0]}); restore the config the '
        'run was trained with.')


def load_run(workdir: str, step='latest', devices=None) -> Run:
  """Opens the run in ``workdir`` at ``step`` ('latest', 'best' or an int).

  Args:
    devices: where the variables go and evaluation runs (default: the first device).

  Raises:
    FileNotFoundError / ValueError: with one line naming what was found and what to do, for a
      missing workdir, no (or only unfinished) checkpoints, an unknown step, or a config that no
      longer builds the checkpointed model.
  """
  workdir = os.path.abspath(os.path.expanduser(workdir))
  # A running training deletes old steps (config.checkpoint.keep) as it saves new ones, possibly
  # while one is being read: then the step is picked again ('latest' finds the newer one; an int
  # gets the error that lists the steps left).
  for attempt in range(_ATTEMPTS):
    try:
      with checkpoint.quiet():  # Orbax logs every step of a restore
        return _load(workdir, step, devices)
    except _Removed as removed:
      if attempt == _ATTEMPTS - 1:
        raise ValueError(f'{removed.args[0]} was deleted by its run (config.checkpoint.keep) '
                         f'while it was being read, {_ATTEMPTS} times in a row; open it when the '
                         'run saves less often, or raise config.checkpoint.keep.') from None


_ATTEMPTS = 5


class _Removed(Exception):
  """The step being read left the workdir (retention), unlike a damaged one."""


def _unreadable(workdir: str, step: int, item: str, error: Exception) -> Exception:
  complete = checkpoint.complete_steps(workdir)
  if step not in complete:
    return _Removed(item)
  return ValueError(f'The checkpoint {item} cannot be read ({checkpoint.first_line(error)}); it '
                    f'may be damaged: open another step of {complete}.')


def _load(workdir: str, step, devices) -> Run:
  config = read_config(workdir)
  mngr = checkpoint.manager(workdir, config, read_only=True)
  step = checkpoint.pick_step(mngr, step, workdir, config)
  config = read_config(workdir, step)
  mesh = parallel.make_mesh(devices or jax.devices()[:1])
  train = sources.for_config(config.data, config.data.train_split)
  example_shape = pipeline.source_shape(train, config.data)
  try:
    model = loop.build_model(config, train.num_classes)
  except (TypeError, ValueError) as error:
    raise ValueError(f'config.json of {workdir} does not build a model ({error}); restore the '
                     'config the run was trained with.') from None
  _, shaped = loop.abstract_init(model, example_shape)
  shaped = {name: tree for name, tree in shaped.items() if name in ('params', 'batch_stats')}
  use_ema = bool(config.ema_decay)
  item = os.path.join(checkpoint.directory(workdir), str(step), 'default')
  try:
    saved = ocp.PyTreeCheckpointer().metadata(item).item_metadata.tree
  except Exception as error:  # pylint: disable=broad-except
    raise _unreadable(workdir, step, item, error) from None
  _check_shapes({'ema_params' if use_ema and name == 'params' else name: tree
                 for name, tree in shaped.items()}, saved, step, workdir)
  target = jax.tree_util.tree_map(
      lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=parallel.replicated(mesh)),
      shaped)
  try:
    variables = checkpoint.restore_variables(mngr, step, target, use_ema)
  except Exception as error:  # pylint: disable=broad-except
    raise _unreadable(workdir, step, item, error) from None
  return Run(workdir, config, model, variables, step, mesh)


def load_or_train(workdir: str, config: str, steps: int = 0, step='latest') -> Run:
  """`load_run`, after training ``config`` (an experiment file) into ``workdir`` when it holds no
  finished run - with the command line a user would type, so a notebook never needs a prepared
  run. ``steps`` > 0 shortens that training to ``--config.num_steps=steps``. The training's
  console goes to ``WORKDIR/train.log``, not into the notebook; a failure raises with its end."""
  if not os.path.exists(os.path.join(workdir, 'final_metrics.json')):
    command = [sys.executable, '-m', 'cnn_jax.main', f'--config={config}', f'--workdir={workdir}']
    if steps:
      command.append(f'--config.num_steps={steps}')
    os.makedirs(workdir, exist_ok=True)
    log = os.path.join(workdir, 'train.log')
    print(f'Training {workdir} ({config}{f", {steps} steps" if steps else ""}; log: {log}) ...',
          flush=True)
    with open(log, 'w', encoding='utf-8') as f:
      code = subprocess.run(command, stdout=f, stderr=subprocess.STDOUT, check=False).returncode
    if code:
      with open(log, encoding='utf-8') as f:
        tail = f.read()[-2000:]
      raise RuntimeError(f'Training {workdir} failed (exit code {code}); the end of {log}:\n{tail}')
  return load_run(workdir, step)
