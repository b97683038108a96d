"""What the command line shows: short log lines, our own INFO only, and paths and commands that
work as printed from the directory the user is in."""

import logging
import os
import shlex
import sys
import time

import cnn_jax


class _Short(logging.Formatter):
  """``HH:MM:SS.mmm message``; warnings and errors say so (absl's prefix is half a line). The
  milliseconds time what happens within a launch (benchmarks/run.py reads them)."""

  def format(self, record: logging.LogRecord) -> str:
    stamp = time.strftime('%H:%M:%S', time.localtime(record.created)) + f'.{int(record.msecs):03d}'
    level = '' if record.levelno < logging.WARNING else f'{record.levelname.lower()}: '
    return f'{stamp} {level}{record.getMessage()}'


class _OursOrWarnings(logging.Filter):
  """Our INFO lines, and warnings and errors from everyone: the libraries' INFO lines (a TPU
  backend that is absent on every CPU, dataset info loads, Orbax's steps) say nothing to do;
  nor does TFDS's warning about a dataset that is about to be prepared."""

  def filter(self, record: logging.LogRecord) -> bool:
    if _PACKAGE in record.pathname:
      return True
    return record.levelno >= logging.WARNING and 'has no dataset_info.json' not in record.getMessage()


_PACKAGE = os.path.dirname(os.path.abspath(cnn_jax.__file__))


def configure(handler: logging.Handler) -> None:
  """Short lines through ``handler`` (absl's), from our package at INFO and all at WARNING."""
  handler.setFormatter(_Short())
  handler.addFilter(_OursOrWarnings())


def shown(path: str) -> str:
  """``path`` as a user types it here: relative below the current directory, else absolute."""
  path = os.path.abspath(os.path.expanduser(path))
  relative = os.path.relpath(path)
  return path if relative.startswith('..') else relative


def tool(name: str) -> str:
  """The command ``name`` from this Python's environment (the venv's ``tensorboard``, ``pip``,
  ``tfds``), shell-quoted; bare where the environment lacks it."""
  path = os.path.join(os.path.dirname(sys.executable), name)
  return shlex.quote(shown(path)) if os.path.exists(path) else name


def checkout() -> str:
  """The source checkout cnn_jax runs from, as a user types it here."""
  return shlex.quote(shown(os.path.dirname(_PACKAGE)))
