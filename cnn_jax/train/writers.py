"""Metric logs: TensorBoard events (tensorboardX), a JSON-lines file, and progress lines."""

import json
import os
import sys
import time

import jax
from absl import logging
from tensorboardX import SummaryWriter


class MetricWriter:
  """Writes scalars from process 0 to ``WORKDIR/tensorboard`` and ``WORKDIR/metrics.jsonl``."""

  def __init__(self, workdir: str, total_steps: int):
    self.enabled = jax.process_index() == 0
    self.total_steps = total_steps
    self.start_time, self.start_step = time.time(), None
    self.tty = sys.stdout.isatty()
    if self.enabled:
      self.tensorboard = SummaryWriter(os.path.join(workdir, 'tensorboard'))
      self.jsonl = open(os.path.join(workdir, 'metrics.jsonl'), 'a', encoding='utf-8')

  def write(self, step: int, scalars: dict[str, float], prefix: str) -> None:
    if not self.enabled:
      return
    for name, value in scalars.items():
      self.tensorboard.add_scalar(f'{prefix}/{name}', value, step)
    self.jsonl.write(json.dumps({'step': step, 'split': prefix, **scalars}) + '\n')
    self.jsonl.flush()
    self.tensorboard.flush()

  def progress(self, step: int, scalars: dict[str, float]) -> None:
    """A progress line with the ETA: rewritten in place on a terminal, logged otherwise."""
    if self.start_step is None:
      self.start_step, self.start_time = step, time.time()
      return
    rate = (step - self.start_step) / max(time.time() - self.start_time, 1e-9)
    eta = (self.total_steps - step) / max(rate, 1e-9)
    text = (f'step {step}/{self.total_steps} ' + ' '.join(f'{k} {v:.4g}' for k, v in scalars.items())
            + f' | {rate:.2f} steps/s, ETA {eta:.0f}s')
    if not self.enabled:
      return
    if self.tty:
      print('\r' + text, end='', flush=True)
    else:
      logging.info(text)

  def close(self) -> None:
    if self.enabled:
      if self.tty:
        print()
      self.tensorboard.close()
      self.jsonl.close()
