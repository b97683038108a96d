"""Preemption: SIGTERM (a scheduler's notice) or Ctrl-C asks the loop to stop at a step boundary.

The handler only sets a flag; the loop finishes the current step, saves a checkpoint at it, waits
for the save and returns, so the same command resumes exactly. A second Ctrl-C interrupts at once.
"""

import contextlib
import signal
import threading

import jax
import numpy as np
from jax.experimental import multihost_utils

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequest:
  """Which signal asked to stop, if any (``name`` is None until one arrives)."""

  def __init__(self):
    self.signum = 0
    self.name = None

  def __bool__(self) -> bool:
    return self.name is not None

  def agreed(self) -> bool:
    """Whether any process was asked to stop: every process must take the same last step. One
    that was not asked names the signal and the process that was (``SIGTERM on process 1``)."""
    if jax.process_count() == 1:
      return bool(self)
    signums = multihost_utils.process_allgather(np.int32(self.signum))
    asked = np.flatnonzero(signums)
    if asked.size and not self:
      self.name = f'{signal.Signals(int(signums[asked[0]])).name} on process {asked[0]}'
    return bool(asked.size)


@contextlib.contextmanager
def stop_on_signals():
  """Within the block, SIGTERM and SIGINT set the yielded `StopRequest` instead of killing."""
  request = StopRequest()
  if threading.current_thread() is not threading.main_thread():
    yield request  # signal handlers can only be installed from the main thread
    return

  def handler(signum, frame):
    if request and signum == signal.SIGINT:
      signal.default_int_handler(signum, frame)
    request.signum, request.name = signum, signal.Signals(signum).name

  previous = {s: signal.signal(s, handler) for s in SIGNALS}
  try:
    yield request
  finally:
    for s, h in previous.items():
      signal.signal(s, h)
