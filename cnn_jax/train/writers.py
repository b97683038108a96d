"""Metric logs: TensorBoard events, a JSON-lines file, and progress lines."""

import collections
import json
import os
import sys
import time

import jax
from absl import logging
# TensorBoard's own event writer, without TensorFlow (tensorboardX imports PyTorch when it is
# installed: 1.2 s of every launch).
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.event_file_writer import EventFileWriter


def _keep_until(path: str, step: int) -> list[dict]:
  """Drops the records after ``step``; returns those kept."""
  if not os.path.exists(path):
    return []
  with open(path, encoding='utf-8') as f:
    lines = f.readlines()
  # A line cut off by a kill is dropped too.
  kept = [l for l in lines if l.endswith('\n') and json.loads(l)['step'] <= step]
  if len(kept) != len(lines):
    with open(path + '.tmp', 'w', encoding='utf-8') as f:
      f.writelines(kept)
    os.replace(path + '.tmp', path)
  return [json.loads(l) for l in kept]


class MetricWriter:
  """Writes scalars from process 0 to ``WORKDIR/tensorboard`` and ``WORKDIR/metrics.jsonl``."""

  def __init__(self, workdir: str, total_steps: int, resume_step: int = 0):
    """A resume at ``resume_step`` drops the records of later steps (written after the restored
    checkpoint, and about to be written again), so every step is logged once."""
    self.enabled = jax.process_index() == 0
    self.total_steps = total_steps
    self.start_time, self.start_step = time.time(), None
    self.tty = sys.stdout.isatty()
    # {split: {step: scalars}}, this run's whole log (a resumed run's earlier records too).
    self.records = collections.defaultdict(dict)
    if self.enabled:
      self.tensorboard = EventFileWriter(os.path.join(workdir, 'tensorboard'))
      path = os.path.join(workdir, 'metrics.jsonl')
      for record in _keep_until(path, resume_step):
        self.records[record.pop('split')][record.pop('step')] = record
      self.jsonl = open(path, 'a', encoding='utf-8')

  def write(self, step: int, scalars: dict[str, float], prefix: str) -> None:
    self.records[prefix][step] = scalars
    if not self.enabled:
      return
    summary = summary_pb2.Summary(value=[
        summary_pb2.Summary.Value(tag=f'{prefix}/{name}', simple_value=value)
        for name, value in scalars.items()])
    self.tensorboard.add_event(event_pb2.Event(wall_time=time.time(), step=step, summary=summary))
    self.jsonl.write(json.dumps({'step': step, 'split': prefix, **scalars}) + '\n')
    self.jsonl.flush()
    self.tensorboard.flush()

  def best(self, split: str, key) -> int:
    """The step of ``split``'s records with the highest ``key(scalars)`` (`checkpoint.ranking`)."""
    by_step = self.records[split]
    return max(by_step, key=lambda step: key({**by_step[step], 'step': step}))

  def line(self, text: str) -> None:
    """A line that stays (an evaluation), after the progress line on a terminal."""
    if not self.enabled:
      return
    if self.tty:
      print('\r\033[K' + text, flush=True)
    else:
      logging.info(text)

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

  def __enter__(self) -> 'MetricWriter':
    return self

  def __exit__(self, kind, error, traceback) -> None:
    """Closes both logs. Closing flushes, so it can fail on a full disk too: while another error
    is stopping the run, that failure is only logged, so the error that names the cause is kept."""
    if not self.enabled:
      return
    if self.tty:
      print()
    try:
      try:
        self.tensorboard.close()
      finally:
        self.jsonl.close()
    except OSError as close_error:
      if kind is None:
        raise
      logging.warning('Closing the metric logs: %s', close_error)
