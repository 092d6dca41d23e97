"""The oneDNN convolution kernels (`conv_impl="onednn"`) against XLA's convolution and autodiff.

Skipped where the kernels cannot be built (no oneDNN, no C++ compiler); the fallback itself is
tested everywhere. The conv_impl-wide equalities (every implementation == "xla", layers and the
whole network) live in conv_impl_test.py and cover "onednn" too.
"""

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
    (2, 37, 16, 4, 1), (2, 37, 16, 4, 2), (2, 40, 64, 4, 2), (3, 5, 16, 4, 1),
    (2, 33, 64, 16, 1), (2, 40, 8, 1, 2), (3, 1, 8, 2, 1),
]


@needs_onednn
@pytest.mark.parametrize("b,length,c,groups,stride", CASES)
def test_primitives_match_float64_autodiff(b, length, c, groups, stride):
  """forward / backward_data / backward_weights (float32) == XLA + autodiff in float64."""
  rng = np.random.default_rng(length * stride + c)
  x = rng.standard_normal((b, length, c)).astype(np.float32)
  w = rng.standard_normal((16, c // groups, c)).astype(np.float32)
  with jax.enable_x64():
    y64, vjp = jax.vjp(lambda x, w: conv_cpu._conv_xla(x, w, stride=stride, groups=groups),
                       jnp.asarray(x, jnp.float64), jnp.asarray(w, jnp.float64))
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
    np.testing.assert_array_equal(conv_cpu._conv_onednn(x, w, stride=2, groups=16),
                                  conv_cpu._conv_cpu(x, w, stride=2, groups=16))
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
