"""Sections of the docs that code writes (the zoo table, the benchmark tables): each between a
first line that names its source and the command that rewrites it, and an end line. Tests compare
what is stored with what the code makes now, so a stale section fails."""

import os


def stored(text: str, begin: str, end: str) -> str:
  """The section of ``text`` from its ``begin`` line to its ``end`` line, both included."""
  if begin not in text or end not in text.split(begin, 1)[1]:
    raise ValueError(f'no generated section: the lines {begin!r} and {end!r} are needed.')
  return begin + text.split(begin, 1)[1].split(end, 1)[0] + end


def replace(path: str, begin: str, end: str, section: str) -> None:
  """Rewrites the section of ``path`` that starts with ``begin`` as ``section`` (which starts with
  ``begin`` and ends with ``end``), atomically."""
  with open(path, encoding='utf-8') as f:
    text = f.read()
  try:
    old = stored(text, begin, end)
  except ValueError as error:
    raise ValueError(f'{path}: {error}') from None
  with open(path + '.tmp', 'w', encoding='utf-8') as f:
    f.write(text.replace(old, section, 1))
  os.replace(path + '.tmp', path)
