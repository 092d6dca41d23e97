"""Native libraries built on first use: the cache directory, the compiler, a locked build.

`clef_jax.allocator` (C) and `clef_jax.models.onednn` (C++) compile their sources with the
system compiler the first time they are needed and reuse the result from
`$XDG_CACHE_HOME/clef_jax/<name>` (default `~/.cache/clef_jax/<name>`).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence


def cache_dir(name: str, environ: Mapping[str, str]) -> str:
  root = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(root, "clef_jax", name)


def compiler(var: str, defaults: Sequence[str], what: str, environ: Mapping[str, str]) -> list[str]:
  """The compiler command: `$var` (split like a shell), else the first of `defaults` on PATH.

  Raises FileNotFoundError with a one-line message naming `what` when there is none.
  """
  default = next((shutil.which(d) for d in defaults if shutil.which(d)), "")
  cmd = shlex.split(environ.get(var, "")) or [default]
  if not cmd[0] or not shutil.which(cmd[0]):
    raise FileNotFoundError(
      f"no {'C++' if var == 'CXX' else 'C'} compiler ({cmd[0] or ' or '.join(defaults)} not "
      f"found) to build {what}; install one or set {var}"
    )
  return cmd


def build_cached(
  path: str,
  compile_cmd: Sequence[str],
  link_args: Sequence[str],
  what: str,
  *,
  timeout: float,
) -> str:
  """Runs `compile_cmd -o <tmp> link_args` once and renames the result to `path`; returns `path`.

  Safe under concurrent first use (pytest-xdist workers, several trainers): the build runs under
  an exclusive lock on a file in `path`'s directory, so one process compiles and the others wait
  and reuse its result, and the library is written to a temporary file and renamed into place,
  so a reader never sees a partial file (also when a build is interrupted). A failed build
  raises RuntimeError with the compiler's first error line.
  """
  if os.path.exists(path):
    return path
  import fcntl  # POSIX only; elsewhere the ImportError tells the caller.

  out_dir = os.path.dirname(path)
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, ".build.lock"), "a") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # Released when the file is closed.
    if os.path.exists(path):  # Built by another process while this one waited.
      return path
    fd, tmp = tempfile.mkstemp(prefix=".build-", suffix=".so", dir=out_dir)
    os.close(fd)
    try:
      proc = subprocess.run(
        [*compile_cmd, "-o", tmp, *link_args], capture_output=True, text=True, timeout=timeout
      )
      if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or ["?"]
        first_error = next((ln for ln in lines if "error" in ln), lines[-1])
        raise RuntimeError(f"building {what} failed ({compile_cmd[0]}): {first_error}")
      os.replace(tmp, path)
    finally:
      if os.path.exists(tmp):
        os.remove(tmp)
  return path
