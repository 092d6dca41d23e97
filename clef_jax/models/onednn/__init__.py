"""Grouped 1-D convolutions on CPU through oneDNN (the library PyTorch's CPU convolutions use).

`conv1d_same(x, kernel, stride=, groups=)` is a SAME-padded grouped convolution on channels-last
float32 arrays whose forward pass, input gradient and kernel gradient are three oneDNN
primitives, called from XLA as FFI custom calls (`conv1d.cc`, next to this file). oneDNN runs
them straight on JAX's buffers (its `nwc` layout is JAX's (B, L, C)), so no activation-sized
layout copy is made, unlike every XLA formulation measured (docs/benchmarks.md).

The shared library is built on first use (a Python package cannot compile at `pip install` time
without a build backend of its own) with the system C++ compiler against the oneDNN headers and
library (PyPI: `pip install 'clef_jax[onednn]'`, i.e. `onednn` + `onednn-devel`), in about 5 s,
and cached under `$XDG_CACHE_HOME/clef_jax/onednn` (default `~/.cache/clef_jax/onednn`), keyed
by the source, jaxlib and oneDNN; `python -m clef_jax.models.onednn` builds and checks it ahead
of time. Concurrent first use is safe (a file lock, and an atomic rename into the cache).
`available()` says whether it worked; when it did not (no compiler, no oneDNN, not a CPU
backend), `reason()` says why in one line and callers fall back to the XLA formulations.

Scope: CPU only (custom calls have no GPU/TPU kernel). The calls are batched under `jax.vmap`
by looping over the mapped axis (`vmap_method="sequential"`), and under `jax.jit` with sharded
inputs XLA gathers them to one device first; inside `jax.shard_map` each shard runs locally.
"""

from __future__ import annotations

import ctypes
import functools
import glob
import hashlib
import os
import sys
import threading

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from clef_jax import native

Array = jax.Array

_SOURCE = os.path.join(os.path.dirname(__file__), "conv1d.cc")
_TARGETS = {
  "clef_onednn_conv1d_fwd": "ClefOnednnConv1dFwd",
  "clef_onednn_conv1d_bwd_data": "ClefOnednnConv1dBwdData",
  "clef_onednn_conv1d_bwd_weights": "ClefOnednnConv1dBwdWeights",
}
_lock = threading.Lock()
_state: dict[str, object] = {}


def _find_onednn() -> tuple[str, str]:
  """(include dir, lib dir) of an installed oneDNN; FileNotFoundError when there is none."""
  prefixes = [sys.prefix, sys.base_prefix, "/usr/local", "/usr"]
  for prefix in dict.fromkeys(prefixes):
    inc = os.path.join(prefix, "include")
    if not os.path.exists(os.path.join(inc, "oneapi", "dnnl", "dnnl.hpp")):
      continue
    for lib in ("lib", "lib64", os.path.join("lib", "x86_64-linux-gnu")):
      libdir = os.path.join(prefix, lib)
      if glob.glob(os.path.join(libdir, "libdnnl.so*")):
        return inc, libdir
  raise FileNotFoundError(
    "oneDNN headers and library not found; install them with pip install 'clef_jax[onednn]'"
  )


def _cache_dir() -> str:
  return native.cache_dir("onednn", os.environ)


def _build(inc: str, libdir: str) -> str:
  """Compiles conv1d.cc (once per source/jaxlib/oneDNN); returns the shared library's path.

  Safe under concurrent first use (pytest-xdist workers, several trainers): the build runs under
  an exclusive lock on a file in the cache directory, so one process compiles and the others wait
  and reuse its result, and the library is written to a temporary file and renamed into place,
  so a reader never sees a partial file (also when a build is interrupted).
  """
  with open(_SOURCE, "rb") as f:
    source = f.read()
  libdnnl = os.path.realpath(glob.glob(os.path.join(libdir, "libdnnl.so*"))[0])
  parts = [
    source,
    jax.ffi.include_dir().encode(),
    jax.__version__.encode(),
    inc.encode(),
    libdnnl.encode(),
    str(os.path.getmtime(libdnnl)).encode(),
  ]
  key = hashlib.sha256(b"\0".join(parts)).hexdigest()[:16]
  path = os.path.join(_cache_dir(), f"libclef_onednn_{key}.so")
  if os.path.exists(path):
    return path
  cxx = native.compiler("CXX", ("g++", "c++"), "the oneDNN kernels", os.environ)
  # DT_RPATH (not RUNPATH) so that libdnnl's own dependencies (TBB, SYCL) resolve from libdir.
  compile_cmd = [*cxx, "-O2", "-std=c++17", "-shared", "-fPIC", _SOURCE]
  link = ["-I", jax.ffi.include_dir(), "-I", inc, "-L", libdir, "-ldnnl"]
  link.append(f"-Wl,--disable-new-dtags,-rpath,{libdir}")
  return native.build_cached(path, compile_cmd, link, "the oneDNN kernels", timeout=600)


def _load() -> None:
  if jax.default_backend() != "cpu":
    raise RuntimeError(f"the oneDNN kernels are CPU-only (backend: {jax.default_backend()})")
  inc, libdir = _find_onednn()
  # PyPI's oneDNN runs its CPU engine on the SYCL runtime, which finds the CPU device through the
  # OpenCL ICD loader; the wheel's ICD file names a path that does not exist, so point the loader
  # at the CPU runtime shipped next to libdnnl (only if the user has not chosen one).
  icd = os.path.join(libdir, "libintelocl.so")
  if os.path.exists(icd):
    os.environ.setdefault("OCL_ICD_FILENAMES", icd)
  path = _build(inc, libdir)
  lib = ctypes.CDLL(path)
  _state["path"], _state["libdir"] = path, libdir
  for name, symbol in _TARGETS.items():
    jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(lib, symbol)), platform="cpu")
  # Creating the engine here (one tiny convolution) turns a broken runtime into "unavailable"
  # instead of an error inside a compiled step.
  # `ensure_compile_time_eval`: runs now even when the first use is inside a `jit` trace.
  with jax.ensure_compile_time_eval():
    y = np.asarray(
      forward(
        jnp.ones((1, 4, 2), jnp.float32), jnp.ones((2, 1, 2), jnp.float32), stride=1, groups=2
      )
    )
  if not np.allclose(y[0, :, 0], [2.0, 2.0, 2.0, 1.0]):
    raise RuntimeError(f"the oneDNN kernels returned wrong values: {y[0, :, 0]}")


def available() -> bool:
  """True when the oneDNN kernels are built, loaded and registered (tried once per process)."""
  with _lock:
    if "ok" not in _state:
      try:
        _load()
        _state["ok"], _state["reason"] = True, None
      except Exception as e:  # noqa: BLE001 -- any failure means: fall back to XLA.
        message = " ".join(str(e).split())  # One line, whatever the error text holds.
        _state["ok"], _state["reason"] = False, f"{type(e).__name__}: {message}"
    return bool(_state["ok"])


def reason() -> str | None:
  """Why `available()` is False (one line), else None."""
  available()
  return _state["reason"]  # type: ignore[return-value]


def warn_if_unavailable() -> None:
  """Logs one warning line (once per process) when the kernels are unavailable."""
  if not available() and not _state.get("warned"):
    _state["warned"] = True
    logging.warning("conv_impl='onednn' unavailable, running 'cpu': %s", reason())


def library_path() -> str | None:
  """The loaded shared library's path (in the cache), or None when unavailable."""
  return _state.get("path") if available() else None  # type: ignore[return-value]


_RUNTIMES = {1: "sequential", 2: "OpenMP", 4: "TBB", 8: "threadpool", 256: "OpenCL", 512: "SYCL"}


def version() -> str | None:
  """oneDNN's version and CPU runtime as loaded, e.g. "3.13.0 (CPU runtime SYCL)"; else None."""
  if not available():
    return None

  class _Version(ctypes.Structure):
    _fields_ = [
      ("major", ctypes.c_int),
      ("minor", ctypes.c_int),
      ("patch", ctypes.c_int),
      ("hash", ctypes.c_char_p),
      ("cpu_runtime", ctypes.c_uint),
      ("gpu_runtime", ctypes.c_uint),
    ]

  libdnnl = ctypes.CDLL(glob.glob(os.path.join(str(_state["libdir"]), "libdnnl.so*"))[0])
  libdnnl.dnnl_version.restype = ctypes.POINTER(_Version)
  v = libdnnl.dnnl_version().contents
  runtime = _RUNTIMES.get(v.cpu_runtime, str(v.cpu_runtime))
  return f"{v.major}.{v.minor}.{v.patch} (CPU runtime {runtime})"


def _out_len(length: int, stride: int) -> int:
  return (length + stride - 1) // stride


def forward(x: Array, kernel: Array, *, stride: int, groups: int) -> Array:
  """y = conv(x, kernel): (B, L, Cin) x (K, Cin/G, Cout) -> (B, ceil(L/stride), Cout)."""
  b, length, _ = x.shape
  out = jax.ShapeDtypeStruct((b, _out_len(length, stride), kernel.shape[2]), jnp.float32)
  return jax.ffi.ffi_call("clef_onednn_conv1d_fwd", out, vmap_method="sequential")(
    x, kernel, stride=np.int64(stride), groups=np.int64(groups)
  )


def backward_data(g: Array, kernel: Array, *, length: int, stride: int, groups: int) -> Array:
  """dx for output gradient g (B, O, Cout): (B, length, Cin)."""
  out = jax.ShapeDtypeStruct((g.shape[0], length, kernel.shape[1] * groups), jnp.float32)
  return jax.ffi.ffi_call("clef_onednn_conv1d_bwd_data", out, vmap_method="sequential")(
    g, kernel, stride=np.int64(stride), groups=np.int64(groups), length=np.int64(length)
  )


def backward_weights(x: Array, g: Array, *, kernel_size: int, stride: int, groups: int) -> Array:
  """dkernel for input x and output gradient g: (K, Cin/G, Cout)."""
  out = jax.ShapeDtypeStruct((kernel_size, x.shape[2] // groups, g.shape[2]), jnp.float32)
  return jax.ffi.ffi_call("clef_onednn_conv1d_bwd_weights", out, vmap_method="sequential")(
    x, g, stride=np.int64(stride), groups=np.int64(groups), kernel_size=np.int64(kernel_size)
  )


def supports(x: Array, kernel: Array, stride: int) -> bool:
  """Whether these operands can take the oneDNN kernels (float32, 1 <= stride <= K, built)."""
  return (
    x.dtype == jnp.float32
    and kernel.dtype == jnp.float32
    and 1 <= stride <= kernel.shape[0]
    and available()
  )


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv(x: Array, kernel: Array, stride: int, groups: int) -> Array:
  return forward(x, kernel, stride=stride, groups=groups)


def _conv_fwd(x, kernel, stride, groups):
  return forward(x, kernel, stride=stride, groups=groups), (x, kernel)


def _conv_bwd(stride, groups, res, g):
  x, kernel = res
  g = g.astype(jnp.float32)
  dx = backward_data(g, kernel, length=x.shape[1], stride=stride, groups=groups)
  dw = backward_weights(x, g, kernel_size=kernel.shape[0], stride=stride, groups=groups)
  return dx, dw


_conv.defvjp(_conv_fwd, _conv_bwd)


def conv1d_same(x: Array, kernel: Array, *, stride: int, groups: int) -> Array:
  """SAME-padded grouped convolution, (B, L, Cin) x (K, Cin/G, Cout) -> (B, ceil(L/s), Cout).

  All three passes in oneDNN; differentiable. Needs `supports(x, kernel, stride)`. Same values
  as `lax.conv_general_dilated` up to summation order.
  """
  if not supports(x, kernel, stride):
    raise ValueError(
      f"the oneDNN convolution needs float32 operands, 1 <= stride <= K and the "
      f"built kernels; got {x.dtype} x {kernel.dtype}, stride {stride} "
      f"({reason() or 'kernels available'})"
    )
  return _conv(x, kernel, stride, groups)
