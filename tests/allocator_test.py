"""The caching host allocator (`clef_jax.allocator`): built, preloaded, exact, and bounded.

Each behaviour runs in a subprocess with the library in LD_PRELOAD (it must replace malloc for
the whole process from its start), against the same code run on glibc's malloc.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from clef_jax import allocator

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="LD_PRELOAD: Linux")

MiB = 1 << 20

# Shared by the scripts: libc through ctypes, the page faults of this process, the counters.
PRELUDE = textwrap.dedent(
  """
  import ctypes, json, os, resource, sys
  libc = ctypes.CDLL(None)
  libc.malloc.restype = ctypes.c_void_p
  libc.malloc.argtypes = [ctypes.c_size_t]
  libc.realloc.restype = ctypes.c_void_p
  libc.realloc.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
  libc.free.argtypes = [ctypes.c_void_p]
  libc.malloc_usable_size.restype = ctypes.c_size_t
  libc.malloc_usable_size.argtypes = [ctypes.c_void_p]
  libc.memalign.restype = ctypes.c_void_p
  libc.memalign.argtypes = [ctypes.c_size_t, ctypes.c_size_t]
  libc.posix_memalign.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_size_t, ctypes.c_size_t]
  MiB = 1 << 20

  def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

  def counters():
    from clef_jax import allocator
    return allocator.stats()

  def emit(**kw):
    print("RESULT " + json.dumps(kw))
  """
)


@pytest.fixture(scope="module")
def lib(tmp_path_factory) -> str:
  environ = {**os.environ, "XDG_CACHE_HOME": str(tmp_path_factory.mktemp("cache"))}
  path = allocator.library(environ)
  if path is None:
    pytest.skip(f"cannot build the allocator here: {allocator.reason()}")
  return path


def run_script(body: str, preload: str | None, **env) -> dict:
  environ = {
    k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "CLEF_JAX_HOST_ALLOCATOR")
  }
  environ.update(JAX_PLATFORMS="cpu", **{k: str(v) for k, v in env.items()})
  if preload:
    environ = allocator.preload_env(preload, environ)
  proc = subprocess.run(
    [sys.executable, "-c", PRELUDE + textwrap.dedent(body)],
    env=environ,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
  assert len(lines) == 1, proc.stdout[-3000:]
  return json.loads(lines[0][len("RESULT ") :])


REPEAT = textwrap.dedent(
  """
  size, n = 64 * MiB, 10
  p = libc.malloc(size); ctypes.memset(p, 1, size); libc.free(p)  # First touch: faults anyway.
  f0 = faults()
  for i in range(n):
    p = libc.malloc(size)
    ctypes.memset(p, i, size)
    libc.free(p)
  emit(faults_per_block=(faults() - f0) / n, stats=counters())
  """
)


def test_freed_large_blocks_are_reused_without_page_faults(lib):
  system = run_script(REPEAT, None)
  cached = run_script(REPEAT, lib)
  # glibc maps each 64 MiB block afresh: every 4 KiB page faults on first write.
  assert system["faults_per_block"] > 0.9 * (64 * MiB / os.sysconf("SC_PAGESIZE")), system
  assert system["stats"] is None  # Not preloaded: no counters.
  assert cached["faults_per_block"] < 0.02 * system["faults_per_block"], (cached, system)
  s = cached["stats"]
  assert s["new"] == 1 and s["hot_reuses"] == 10 and s["cold_reuses"] == 0, s
  assert s["hot_bytes"] == 64 * MiB and s["reserved_used"] == 64 * MiB, s


def test_cap_returns_freed_blocks_to_the_kernel(lib):
  body = REPEAT.replace(
    "emit(",
    "rss = int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGESIZE')\nemit(rss=rss, ",
  )
  capped = run_script(body, lib, CLEF_BIGCACHE_BYTES=0)
  s = capped["stats"]
  assert s["hot_bytes"] == 0 and s["new"] == 1 and s["cold_reuses"] == 10, s
  # Released pages fault again when reused, and the freed block is not resident.
  assert capped["faults_per_block"] > 0.9 * (64 * MiB / os.sysconf("SC_PAGESIZE")), capped
  warm = run_script(body, lib)
  assert warm["rss"] - capped["rss"] > 0.9 * 64 * MiB, (warm["rss"], capped["rss"])


def test_threshold_leaves_small_requests_to_glibc(lib):
  body = """
  ps = [libc.malloc(4 * MiB) for _ in range(4)]
  for p in ps: libc.free(p)
  q = libc.malloc(16 * MiB); libc.free(q)
  emit(stats=counters())
  """
  s = run_script(body, lib)["stats"]
  assert s["new"] == 1 and s["reserved_used"] == 16 * MiB, s  # 4 MiB < the 8 MiB default.
  s = run_script(body, lib, CLEF_BIGCACHE_THRESHOLD=4 * MiB)["stats"]
  # 4 x 4 MiB carved, freed and coalesced into one 16 MiB block, which serves the 16 MiB.
  assert s["new"] == 4 and s["hot_reuses"] == 1 and s["reserved_used"] == 16 * MiB, s


def test_alignment_usable_size_realloc_and_memalign(lib):
  body = """
  out = {}
  p = ctypes.c_void_p()
  out["einval"] = libc.posix_memalign(ctypes.byref(p), 3, 16 * MiB)
  assert libc.posix_memalign(ctypes.byref(p), 4096, 10 * MiB + 5) == 0
  out["aligned_2mib"] = p.value % (2 * MiB) == 0
  out["usable"] = libc.malloc_usable_size(p.value)
  # Python objects stay small here (a large one would be served by the allocator too).
  head, tail = bytes(range(256)) * 16, bytes(range(255, -1, -1)) * 16
  ctypes.memset(p.value, 0x5A, 10 * MiB)
  ctypes.memmove(p.value, head, len(head))
  ctypes.memmove(p.value + 10 * MiB - len(tail), tail, len(tail))
  def kept(q, n):
    return (ctypes.string_at(q, min(n, len(head))) == head[:n]
            and (n < 10 * MiB or ctypes.string_at(q + 10 * MiB - len(tail), len(tail)) == tail)
            and (n < 5 * MiB or ctypes.string_at(q + 5 * MiB, 64) == b"\x5a" * 64))
  grown = libc.realloc(p.value, 40 * MiB)
  out["grow_kept"] = kept(grown, 10 * MiB)
  shrunk = libc.realloc(grown, 12 * MiB)  # Still large: stays in place.
  out["shrink_in_place"] = shrunk == grown
  small = libc.realloc(shrunk, 1000)  # Below the threshold: moves to glibc, prefix kept.
  out["small_kept"] = kept(small, 1000)
  libc.free(small)
  big_align = libc.memalign(4 * MiB, 16 * MiB)  # Coarser than 2 MiB: glibc's memalign.
  out["memalign_4mib"] = big_align % (4 * MiB) == 0
  libc.free(big_align)
  out["stats"] = counters()
  emit(**out)
  """
  r = run_script(body, lib)
  assert r["einval"] == 22, r
  assert r["aligned_2mib"] and r["usable"] == 12 * MiB, r  # Rounded up to 2 MiB.
  assert r["grow_kept"] and r["shrink_in_place"] and r["small_kept"] and r["memalign_4mib"], r
  s = r["stats"]
  assert s["new"] == 2 and s["hot_bytes"] == 52 * MiB, s  # 12 MiB + 40 MiB, both freed.


def test_threads_and_fork(lib):
  body = """
  import threading
  errors = []
  def work(seed):
    for i in range(40):
      size = (8 + (seed * 7 + i * 3) % 24) * MiB
      p = libc.malloc(size)
      ctypes.memset(p, (seed + i) % 256, size)
      if ctypes.string_at(p + size - 64, 64) != bytes([(seed + i) % 256]) * 64:
        errors.append((seed, i))
      libc.free(p)
  ts = [threading.Thread(target=work, args=(k,)) for k in range(4)]
  for t in ts: t.start()
  for t in ts: t.join()
  keep = libc.malloc(32 * MiB); ctypes.memset(keep, 7, 32 * MiB)
  pid = os.fork()
  if pid == 0:
    ok = ctypes.string_at(keep, 16) == b"\\x07" * 16
    for _ in range(5):
      q = libc.malloc(24 * MiB); ctypes.memset(q, 3, 24 * MiB); libc.free(q)
    libc.free(keep)
    os._exit(0 if ok else 3)
  _, status = os.waitpid(pid, 0)
  emit(errors=errors, child=os.waitstatus_to_exitcode(status), parent_kept=ctypes.string_at(keep, 16) == b"\\x07" * 16, stats=counters())
  """
  r = run_script(body, lib)
  assert r["errors"] == [] and r["child"] == 0 and r["parent_kept"], r
  assert r["stats"]["hot_reuses"] > 100, r["stats"]


JAX_STEP = """
import jax, jax.numpy as jnp, numpy as np

def loss(w, x):
  y = jax.lax.conv_general_dilated(x, w, (1,), "SAME", dimension_numbers=("NWC", "WIO", "NWC"))
  return jnp.mean(jnp.tanh(y) ** 2)

step = jax.jit(lambda w, x: w - 0.1 * jax.grad(loss)(w, x))
rng = np.random.default_rng(0)
x = jnp.asarray(rng.standard_normal((32, 5000, 16), np.float32))
w = jnp.asarray(rng.standard_normal((9, 16, 32), np.float32) * 0.1)
for _ in range(4):
  w = step(w, x)
big = np.linalg.svd(rng.standard_normal((600, 600)))[1]  # numpy's large buffers too.
emit(w=np.asarray(w).tobytes().hex(), svd=big.tobytes().hex(), stats=counters())
"""


def test_jax_and_numpy_results_are_bit_identical(lib):
  system = run_script(JAX_STEP, None)
  cached = run_script(JAX_STEP, lib)
  assert cached["w"] == system["w"] and cached["svd"] == system["svd"]
  assert cached["stats"]["hot_reuses"] > 0, cached["stats"]  # XLA's buffers went through it.
  assert np.isfinite(np.frombuffer(bytes.fromhex(cached["w"]), np.float32)).all()


def test_reexec_preloads_once(lib, tmp_path):
  body = """
  from clef_jax import allocator
  allocator.reexec_preloaded(sys.argv[1])
  emit(active=allocator.active(), argv=sys.argv[1:], preload=os.environ.get("LD_PRELOAD", ""))
  """
  environ = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
  environ["XDG_CACHE_HOME"] = os.path.dirname(os.path.dirname(os.path.dirname(lib)))
  environ["LD_PRELOAD"] = "libm.so.6"  # A preload of the user's own is kept, after ours.
  out = {}
  for choice in ("cache", "system"):
    proc = subprocess.run(
      [sys.executable, "-c", PRELUDE + textwrap.dedent(body), choice, "x y"],
      env=environ,
      capture_output=True,
      text=True,
      timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out[choice] = json.loads(proc.stdout.split("RESULT ")[1])
  assert out["cache"] == {"active": True, "argv": ["cache", "x y"], "preload": f"{lib}:libm.so.6"}
  assert out["system"] == {"active": False, "argv": ["system", "x y"], "preload": "libm.so.6"}


def test_no_compiler_falls_back_in_one_line(tmp_path):
  environ = {**os.environ, "CC": str(tmp_path / "no-cc"), "XDG_CACHE_HOME": str(tmp_path)}
  assert allocator.library(environ) is None
  why = allocator.reason()
  assert "no C compiler" in why and "set CC" in why and "\n" not in why, why
  allocator.reexec_preloaded("cache", environ=environ)  # Returns: this process goes on.
  with pytest.raises(ValueError, match="cache, system"):
    allocator.reexec_preloaded("jemalloc")
  proc = subprocess.run(
    [sys.executable, "-m", "clef_jax.allocator"],
    env=environ,
    capture_output=True,
    text=True,
    timeout=60,
  )
  assert proc.returncode == 1 and proc.stdout == "", proc
  assert proc.stderr.strip().splitlines() == [f"error: {why}; runs use the system allocator"]


def test_build_is_cached_per_source(lib, tmp_path):
  cache = os.path.dirname(lib)
  assert os.path.basename(lib).startswith("libclef_bigcache_") and lib.endswith(".so")
  assert [f for f in os.listdir(cache) if not f.startswith(".")] == [os.path.basename(lib)]
  mtime = os.stat(lib).st_mtime_ns
  environ = {**os.environ, "XDG_CACHE_HOME": os.path.dirname(os.path.dirname(cache))}
  assert allocator.build(environ) == lib and os.stat(lib).st_mtime_ns == mtime  # Not rebuilt.


def test_preload_env_puts_ours_first_once():
  env = allocator.preload_env("/x/lib.so", {"LD_PRELOAD": "/a.so:/x/lib.so:/b.so", "K": "v"})
  assert env == {
    "LD_PRELOAD": "/x/lib.so:/a.so:/b.so",
    "K": "v",
    "CLEF_JAX_HOST_ALLOCATOR": "cache",
  }
