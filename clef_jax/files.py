"""Atomic file writes: a reader sees the old file or the whole new one, never half of one.

Pure standard library, so every part of the package (the JAX-free `clef_jax.export` included)
writes through here.
"""

from __future__ import annotations

import os
import pathlib
import uuid
from collections.abc import Callable, Mapping


def _temp_name(path: pathlib.Path) -> pathlib.Path:
  """A hidden sibling of `path`: the same directory, so the final rename is atomic (POSIX)."""
  return path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def atomic_write_all(writes: Mapping[str | os.PathLike, Callable[[pathlib.Path], object]]) -> None:
  """Calls each `write(tmp)` on a temporary sibling of its path, then renames them all into place.

  Nothing is renamed until every write has succeeded; the temporary files are removed when a
  write fails or the process is interrupted in Python, so the targets keep their old contents.
  `write` creates the file itself, so it gets the usual permissions.
  """
  tmps = {pathlib.Path(p): _temp_name(pathlib.Path(p)) for p in writes}
  try:
    for write, tmp in zip(writes.values(), tmps.values()):
      write(tmp)
    for path, tmp in tmps.items():
      os.replace(tmp, path)
  finally:
    for tmp in tmps.values():
      tmp.unlink(missing_ok=True)


def atomic_write(path: str | os.PathLike, write: Callable[[pathlib.Path], object]) -> pathlib.Path:
  """`write(tmp)` on a temporary sibling of `path`, then renames it to `path`; returns `path`."""
  atomic_write_all({path: write})
  return pathlib.Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> pathlib.Path:
  """Writes `text` to `path` atomically; returns `path`."""
  return atomic_write(path, lambda tmp: tmp.write_text(text))
