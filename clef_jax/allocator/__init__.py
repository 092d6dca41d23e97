"""A caching host allocator for large blocks (`bigcache.c`), preloaded into CPU runs.

XLA:CPU mallocs each execution's temporary buffer afresh and frees it when the step ends; glibc
serves blocks that large with a new mmap, so the kernel faults in and zeroes every page of the
buffer on every step (about 260k page faults per Net1D-small training step at B=64, L=5000;
docs/benchmarks.md). `bigcache.c` keeps freed large blocks mapped and hands them out again,
with the resident set bounded (it releases the least recently freed blocks to the kernel past
a cap). It must replace malloc for the whole process from the start, so it is loaded with
`LD_PRELOAD`: entry points whose config says `host_allocator="cache"` call
`reexec_preloaded()` first, which re-executes the same command once with the library
preloaded.

The library is built on first use with the system C compiler ($CC, else cc or gcc; about 1 s)
and cached under `$XDG_CACHE_HOME/clef_jax/allocator` (default `~/.cache/clef_jax/allocator`),
keyed by the source; `python -m clef_jax.allocator` builds it and reports. Where it cannot be
built or used (not Linux/glibc, no compiler) `reason()` says why in one line and the run goes
on with the system allocator.

Tuning (read by the library itself, in the preloaded process): `CLEF_BIGCACHE_THRESHOLD`,
the smallest request it serves (bytes, default 8 MiB); `CLEF_BIGCACHE_BYTES`, the most freed
bytes it keeps mapped (default half of physical memory).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence

from absl import logging

from clef_jax import native

CHOICES = ("cache", "system")
_SOURCE = os.path.join(os.path.dirname(__file__), "bigcache.c")
_PRELOAD = "LD_PRELOAD"
# Set in the re-executed process: a second re-exec is never attempted, even where the loader
# ignored the preload (it then prints its own warning and the process runs on glibc).
_MARK = "CLEF_JAX_HOST_ALLOCATOR"
_reason: str | None = None


def build(environ: Mapping[str, str] | None = None) -> str:
  """Compiles bigcache.c once per source; returns the shared library's path.

  Raises OSError/RuntimeError with a one-line message when it cannot. Concurrent first use is
  safe: one process compiles under a file lock, the others wait and reuse the result, and the
  library is renamed into place, so a reader never sees a partial file.
  """
  environ = os.environ if environ is None else environ
  if not sys.platform.startswith("linux"):
    raise OSError(f"the host allocator needs Linux (LD_PRELOAD), not {sys.platform}")
  with open(_SOURCE, "rb") as f:
    key = hashlib.sha256(f.read()).hexdigest()[:16]
  path = os.path.join(native.cache_dir("allocator", environ), f"libclef_bigcache_{key}.so")
  if os.path.exists(path):
    return path
  cc = native.compiler("CC", ("cc", "gcc"), "the host allocator", environ)
  compile_cmd = [*cc, "-O2", "-shared", "-fPIC", "-Wall", _SOURCE]
  return native.build_cached(
    path, compile_cmd, ["-ldl", "-lpthread"], "the host allocator", timeout=300
  )


def library(environ: Mapping[str, str] | None = None) -> str | None:
  """The built library's path, or None (then `reason()` says why)."""
  global _reason
  try:
    return build(environ)
  except (OSError, RuntimeError, subprocess.SubprocessError) as e:
    _reason = str(e).splitlines()[0] if str(e) else type(e).__name__
    return None


def reason() -> str | None:
  """Why the last `library()` call returned None (one line), else None."""
  return _reason


def active() -> bool:
  """Whether this process runs with the caching allocator (it is mapped into the process)."""
  try:
    with open("/proc/self/maps") as f:
      return "libclef_bigcache_" in f.read()
  except OSError:
    return False


def stats() -> dict[str, int] | None:
  """The preloaded allocator's counters, or None when it is not active.

  `new`, `hot_reuses` and `cold_reuses` count large blocks carved fresh, reused while still
  mapped, and reused after being released; `hot_bytes` is what it holds mapped but free now,
  `reserved_used` how much of its address range it has carved so far.
  """
  if not active():
    return None
  lib = ctypes.CDLL(None)
  try:
    fn = lib.clef_bigcache_stats
  except AttributeError:
    return None
  out = (ctypes.c_ulonglong * 5)()
  fn(out)
  names = ("new", "hot_reuses", "cold_reuses", "hot_bytes", "reserved_used")
  return dict(zip(names, (int(v) for v in out), strict=True))


def preload_env(path: str, environ: Mapping[str, str]) -> dict[str, str]:
  """`environ` with `path` first in LD_PRELOAD and the re-exec mark set."""
  env = dict(environ)
  rest = [p for p in env.get(_PRELOAD, "").split(":") if p and p != path]
  env[_PRELOAD] = ":".join([path, *rest])
  env[_MARK] = "cache"
  return env


def reexec_preloaded(
  choice: str,
  argv: Sequence[str] | None = None,
  environ: Mapping[str, str] | None = None,
) -> None:
  """Re-executes this command with the caching allocator preloaded, when `choice` is "cache".

  Returns (without re-executing) when `choice` is "system", when the allocator is already
  active or a re-exec was already made, or when the library cannot be built (logged in one
  line). Call it first thing in an entry point, before threads, files or devices are opened:
  the process image is replaced. `argv` defaults to `sys.orig_argv` (the interpreter and its
  options included), `environ` to `os.environ`.
  """
  if choice not in CHOICES:
    raise ValueError(f"host_allocator must be one of {', '.join(CHOICES)}, not {choice!r}")
  environ = os.environ if environ is None else environ
  if choice == "system" or environ.get(_MARK) or active():
    return
  path = library(environ)
  if path is None:
    logging.warning("host allocator: using the system allocator (%s)", _reason)
    return
  argv = list(sys.orig_argv if argv is None else argv)
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, argv, preload_env(path, environ))
