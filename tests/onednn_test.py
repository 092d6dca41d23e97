"""The oneDNN convolution kernels (`conv_impl="onednn"`) against XLA's convolution and autodiff.

Skipped where the kernels cannot be built (no oneDNN, no C++ compiler); the fallback itself is
tested everywhere. The conv_impl-wide equalities (every implementation == "xla", layers and the
whole network) live in conv_impl_test.py and cover "onednn" too.
"""

import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from clef_jax.models import conv_cpu, onednn

needs_onednn = pytest.mark.skipif(not onednn.available(), reason=f"oneDNN: {onednn.reason()}")


def _rel_err(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


CASES = [
  # (batch, length, channels, groups, stride): 4 and 16 channels per group, dense, odd
  # lengths, shorter than the kernel, a single sample.
  (2, 37, 16, 4, 1),
  (2, 37, 16, 4, 2),
  (2, 40, 64, 4, 2),
  (3, 5, 16, 4, 1),
  (2, 33, 64, 16, 1),
  (2, 40, 8, 1, 2),
  (3, 1, 8, 2, 1),
]


@needs_onednn
@pytest.mark.parametrize("b,length,c,groups,stride", CASES)
def test_primitives_match_float64_autodiff(b, length, c, groups, stride):
  """forward / backward_data / backward_weights (float32) == XLA + autodiff in float64."""
  rng = np.random.default_rng(length * stride + c)
  x = rng.standard_normal((b, length, c)).astype(np.float32)
  w = rng.standard_normal((16, c // groups, c)).astype(np.float32)
  with jax.enable_x64():
    y64, vjp = jax.vjp(
      lambda x, w: conv_cpu._conv_xla(x, w, stride=stride, groups=groups),
      jnp.asarray(x, jnp.float64),
      jnp.asarray(w, jnp.float64),
    )
    g = rng.standard_normal(y64.shape).astype(np.float32)
    dx64, dw64 = vjp(jnp.asarray(g, jnp.float64))
  x, w, g = jnp.asarray(x), jnp.asarray(w), jnp.asarray(g)
  y = onednn.forward(x, w, stride=stride, groups=groups)
  dx = onednn.backward_data(g, w, length=length, stride=stride, groups=groups)
  dw = onednn.backward_weights(x, g, kernel_size=16, stride=stride, groups=groups)
  for got, want in ((y, y64), (dx, dx64), (dw, dw64)):
    assert got.shape == want.shape and got.dtype == jnp.float32
    assert _rel_err(got, want) <= 2e-6


@needs_onednn
def test_conv1d_same_gradients_and_jit_match_xla():
  x = jax.random.normal(jax.random.key(0), (2, 50, 32))
  w = jax.random.normal(jax.random.key(1), (16, 2, 32))

  def loss(fn):
    return lambda x, w: jnp.sum(jnp.sin(fn(x, w, stride=2, groups=16)))

  got = jax.jit(jax.grad(loss(onednn.conv1d_same), argnums=(0, 1)))(x, w)
  want = jax.grad(loss(conv_cpu._conv_xla), argnums=(0, 1))(x, w)
  for a, b in zip(got, want):
    assert _rel_err(a, b) <= 2e-6


@needs_onednn
def test_vmap_loops_over_the_mapped_axis():
  x = jax.random.normal(jax.random.key(2), (3, 2, 20, 8))
  w = jax.random.normal(jax.random.key(3), (16, 2, 8))
  got = jax.vmap(lambda v: onednn.conv1d_same(v, w, stride=1, groups=4))(x)
  want = jnp.stack([conv_cpu._conv_xla(v, w, stride=1, groups=4) for v in x])
  assert _rel_err(got, want) <= 2e-6


def test_unsupported_operands_fall_back_to_cpu():
  """float64 / bfloat16 layers (and every layer when oneDNN is missing) run "cpu" exactly."""
  with jax.enable_x64():
    x = jax.random.normal(jax.random.key(4), (2, 29, 64), jnp.float64)
    w = jax.random.normal(jax.random.key(5), (16, 4, 64), jnp.float64)
    assert not onednn.supports(x, w, 2)
    np.testing.assert_array_equal(
      conv_cpu._conv_onednn(x, w, stride=2, groups=16),
      conv_cpu._conv_cpu(x, w, stride=2, groups=16),
    )
  with pytest.raises(ValueError, match="float32"):
    onednn.conv1d_same(x.astype(jnp.bfloat16), w.astype(jnp.bfloat16), stride=1, groups=16)


def test_missing_onednn_is_reported_in_one_line(monkeypatch):
  def missing():
    raise FileNotFoundError("oneDNN headers and library not found; install them with ...")

  monkeypatch.setattr(onednn, "_find_onednn", missing)
  monkeypatch.setattr(onednn, "_state", {})
  assert not onednn.available()
  message = onednn.reason()
  assert message.startswith("FileNotFoundError: oneDNN headers") and "\n" not in message


def test_missing_compiler_is_reported_by_the_build_command(monkeypatch, tmp_path, capsys, caplog):
  """`python -m clef_jax.models.onednn` without a compiler: exit 1, one line, nothing cached."""
  from clef_jax.models.onednn import __main__ as cli

  monkeypatch.setattr(onednn, "_cache_dir", lambda: str(tmp_path / "cache"))
  monkeypatch.setenv("CXX", str(tmp_path / "no-such-g++"))
  monkeypatch.setattr(onednn, "_state", {})
  assert cli.main([]) == 1
  err = capsys.readouterr().err.strip()
  # Without oneDNN installed the headers are missed first; the compiler is never looked for.
  assert ("no C++ compiler" in err or "oneDNN headers" in err) and "\n" not in err
  assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())
  # Asking for conv_impl="onednn" then says so once, and the layers run "cpu", bit for bit.
  # The warning is recorded at the call, so another test's absl verbosity cannot hide it.
  warned = []
  monkeypatch.setattr(onednn.logging, "warning", lambda msg, *a: warned.append(msg % a))
  assert conv_cpu.resolve_conv_impl("onednn") == "onednn"
  conv_cpu.resolve_conv_impl("onednn")
  assert len(warned) == 1 and "running 'cpu'" in warned[0] and "\n" not in warned[0]
  x = jax.random.normal(jax.random.key(6), (2, 21, 16))
  w = jax.random.normal(jax.random.key(7), (16, 4, 16))
  for impl in ("onednn", "onednn_fwd"):
    np.testing.assert_array_equal(
      conv_cpu.conv1d_same(x, w, stride=2, groups=4, impl=impl),
      conv_cpu._conv_cpu(x, w, stride=2, groups=4),
    )


def test_a_failing_compiler_is_one_line_and_leaves_no_file(monkeypatch, tmp_path):
  fake = tmp_path / "fake-cxx"
  fake.write_text(
    "#!/bin/sh\necho 'conv1d.cc:1:1: error: something broke' >&2\n"
    "echo 'compilation terminated.' >&2\nexit 1\n"
  )
  fake.chmod(0o755)
  monkeypatch.setattr(onednn, "_cache_dir", lambda: str(tmp_path / "cache"))
  monkeypatch.setenv("CXX", str(fake))
  monkeypatch.setattr(onednn, "_state", {})
  assert not onednn.available()
  message = onednn.reason()
  if "oneDNN headers" not in message:  # With oneDNN installed, the compiler did run.
    assert message.startswith("RuntimeError: building the oneDNN kernels failed")
    assert "error: something broke" in message and "\n" not in message
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [".build.lock"]


@needs_onednn
def test_build_command_reports_the_cached_library(capsys):
  from clef_jax.models.onednn import __main__ as cli

  assert cli.main([]) == 0
  lines = capsys.readouterr().out.strip().splitlines()
  assert lines[0].split(": ", 1)[1] == onednn.library_path()
  assert onednn.library_path().endswith(".so") and lines[1].startswith("oneDNN 3.")


@needs_onednn
@pytest.mark.slow
def test_concurrent_first_use_compiles_once(tmp_path):
  """Three processes building into one empty cache at once: one compile, one library, all load."""
  log = tmp_path / "compiles.log"
  wrapper = tmp_path / "cxx"
  cxx = shutil.which("g++") or "c++"
  wrapper.write_text(f'#!/bin/sh\necho run >> {log}\nsleep 1\nexec {cxx} "$@"\n')
  wrapper.chmod(0o755)
  env = {
    **os.environ,
    "XDG_CACHE_HOME": str(tmp_path / "xdg"),
    "CXX": str(wrapper),
    "JAX_PLATFORMS": "cpu",
  }
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # This checkout's clef_jax.
  procs = [
    subprocess.Popen(
      [sys.executable, "-m", "clef_jax.models.onednn"],
      env=env,
      cwd=root,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
    for _ in range(3)
  ]
  outs = [p.communicate(timeout=300) for p in procs]
  assert [p.returncode for p in procs] == [0, 0, 0], outs
  paths = {out.splitlines()[0].split(": ", 1)[1] for out, _ in outs}
  assert len(paths) == 1
  assert log.read_text().split() == ["run"]
  cache = tmp_path / "xdg" / "clef_jax" / "onednn"
  assert sorted(p.name for p in cache.iterdir()) == [".build.lock", os.path.basename(*paths)]


@needs_onednn
@pytest.mark.parametrize("stride, channels, groups", [(1, 64, 4), (2, 16, 4), (2, 64, 64)])
def test_onednn_fwd_is_onednns_forward_with_cpus_gradients(stride, channels, groups):
  """`"onednn_fwd"`: the forward values are oneDNN's, bit for bit, and both gradients are
  `"cpu"`'s, bit for bit (its VJP runs "cpu"'s)."""
  x = jax.random.normal(jax.random.key(8), (2, 37, channels))
  w = jax.random.normal(jax.random.key(9), (16, channels // groups, channels))
  probe = jax.random.normal(jax.random.key(10), (2, -(-37 // stride), channels))

  def loss(impl):
    def f(x, w):
      return jnp.sum(conv_cpu.conv1d_same(x, w, stride=stride, groups=groups, impl=impl) * probe)

    return jax.jit(jax.grad(f, argnums=(0, 1)))(x, w)

  np.testing.assert_array_equal(
    jax.jit(
      lambda x, w: conv_cpu.conv1d_same(x, w, stride=stride, groups=groups, impl="onednn_fwd")
    )(x, w),
    jax.jit(lambda x, w: onednn.forward(x, w, stride=stride, groups=groups))(x, w),
  )
  for got, want in zip(loss("onednn_fwd"), loss("cpu"), strict=True):
    np.testing.assert_array_equal(got, want)
