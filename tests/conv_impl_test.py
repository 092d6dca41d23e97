"""Every Net1D convolution implementation equals the plain XLA one, values and gradients.

"polyphase", "hybrid", "cpu" (the CPU default) and "tpu" (groups merged, TPU default) reorder
sums, so equality is to rounding: ~1e-6 relative in float32 and ~1e-12 in float64. x64 runs
inside `jax.enable_x64` so the global flag is untouched.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from clef_jax.models import conv_cpu, init, net1d

IMPLS = sorted(conv_cpu.GROUPED_CONV_IMPLS)
OTHER_IMPLS = [impl for impl in IMPLS if impl != "xla"]
# "cpu" only dispatches per layer to "hybrid" or "polyphase" (test_cpu_dispatches_per_layer);
# the layer-level cases run for the formulations themselves.
LAYER_IMPLS = [impl for impl in OTHER_IMPLS if impl != "cpu"]
TOL = {jnp.float32: 2e-6, jnp.float64: 1e-12}


def _rel_err(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def _assert_trees_close(actual, expected, tol, what):
  flat_a = jax.tree_util.tree_leaves_with_path(actual)
  flat_e = jax.tree_util.tree_leaves(expected)
  assert len(flat_a) == len(flat_e)
  for (path, a), e in zip(flat_a, flat_e):
    assert a.shape == e.shape and a.dtype == e.dtype, (what, path)
    err = _rel_err(a, e)
    assert err <= tol, f"{what} {jax.tree_util.keystr(path)}: relative error {err:.2e} > {tol:.0e}"


def _conv_value_and_grads(impl, x, *, features, kernel_size, stride, groups, dtype):
  """Output of a Conv1D layer and the gradients of a nonlinear loss wrt params and input."""
  layer = net1d.Conv1D(features, kernel_size, stride=stride, groups=groups, dtype=dtype, impl=impl)
  params = layer.init(jax.random.key(0), x)["params"]
  params = jax.tree.map(lambda p: p.astype(dtype), params)

  def loss(p, x):
    y = layer.apply({"params": p}, x)
    return jnp.sum(jnp.sin(y) * jnp.arange(y.size, dtype=y.dtype).reshape(y.shape) / y.size), y

  (_, y), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(params, x)
  return y, grads


CONV_CASES = [
  # (length, channels, groups): odd and even lengths, one shorter than the kernel, groups in
  # {1, 4, 64} with 1, 4 and 16 channels per group (8 and 4 polyphase phases).
  (40, 16, 1),
  (37, 16, 4),
  (40, 64, 4),
  (33, 64, 64),
  (5, 16, 4),
]


@functools.cache
def _grouped_case(impl, dtype_name, stride, length, channels, groups):
  """`_conv_value_and_grads` of one grouped-conv case; cached, so the "xla" reference of a case
  is computed once for all the implementations compared with it."""
  dtype = jnp.dtype(dtype_name)
  with jax.enable_x64(dtype == jnp.float64):
    x = jax.random.normal(jax.random.key(1), (2, length, channels), dtype)
    kw = dict(features=channels, kernel_size=16, stride=stride, groups=groups, dtype=dtype)
    return _conv_value_and_grads(impl, x, **kw)


@pytest.mark.parametrize("impl", LAYER_IMPLS)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("length,channels,groups", CONV_CASES)
def test_grouped_conv_matches_xla(impl, dtype, stride, length, channels, groups, fast_compiles):
  case = (jnp.dtype(dtype).name, stride, length, channels, groups)
  y, grads = _grouped_case(impl, *case)
  y_ref, grads_ref = _grouped_case("xla", *case)
  assert y.shape == (2, -(-length // stride), channels) and y.dtype == dtype
  _assert_trees_close(y, y_ref, TOL[dtype], "output")
  _assert_trees_close(grads, grads_ref, TOL[dtype], "grads (params, input)")


@pytest.mark.parametrize("impl", LAYER_IMPLS)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("cin,cout", [(8, 256), (300, 8)])
def test_pointwise_conv_matches_xla(impl, dtype, cin, cout):
  # Wide enough for the CPU weight-gradient path; both transposition branches.
  assert max(cin, cout) >= conv_cpu._WGRAD_TRANSPOSE_MIN_CHANNELS
  with jax.enable_x64(dtype == jnp.float64):
    x = jax.random.normal(jax.random.key(2), (2, 11, cin), dtype)
    kw = dict(features=cout, kernel_size=1, stride=1, groups=1, dtype=dtype)
    y, grads = _conv_value_and_grads(impl, x, **kw)
    y_ref, grads_ref = _conv_value_and_grads("xla", x, **kw)
    _assert_trees_close(y, y_ref, TOL[dtype], "output")
    _assert_trees_close(grads, grads_ref, TOL[dtype], "grads (params, input)")


@functools.cache
def _net_value_and_grads(impl: str, dtype_name: str):
  """Embedding of Net1D-small and the gradients of a nonlinear loss (params, input); cached."""
  dtype = jnp.dtype(dtype_name)
  model = net1d.Net1D(size="small", dtype=dtype, conv_impl=impl)
  # L = 300 gives odd lengths (75, 19, 5, 3) in later stages.
  x = jax.random.normal(jax.random.key(3), (2, 300, 1), jnp.float32)
  params = init.init_params(model, jax.random.key(0), (1, 300, 1))  # fused: compiles fast

  def loss(p, x):
    z = model.apply({"params": p}, x)[0]
    return jnp.sum(jnp.cos(z) * jnp.arange(z.shape[-1])), z

  (_, z), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(params, x)
  return z, grads


@pytest.mark.parametrize("impl", OTHER_IMPLS)
def test_net1d_small_matches_xla(impl, fast_compiles):
  # float32; the float64 forward of the default ("auto") implementation is pinned to 1e-9 by the
  # spec test vector in net1d_test.py, and every layer is checked in float64 above.
  z, grads = _net_value_and_grads(impl, "float32")
  z_ref, grads_ref = _net_value_and_grads("xla", "float32")
  # Whole-network errors compound over 11 layers, hence 10x the per-layer tolerance.
  _assert_trees_close(z, z_ref, 10 * TOL[jnp.float32], "embedding")
  _assert_trees_close(grads, grads_ref, 10 * TOL[jnp.float32], "grads (params, input)")


@pytest.mark.parametrize("impl", OTHER_IMPLS)
def test_bfloat16_compute(impl, fast_compiles):
  z32, _ = _net_value_and_grads(impl, "float32")
  z16, grads16 = _net_value_and_grads(impl, "bfloat16")
  assert z16.dtype == jnp.float32  # The pooled embedding is accumulated in float32.
  for g in jax.tree_util.tree_leaves(grads16):
    assert g.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(g)))  # Params stay float32.
  assert _rel_err(z16, z32) < 5e-2


@pytest.mark.parametrize("channels,groups,expected", [(64, 4, "hybrid"), (64, 16, "polyphase")])
def test_cpu_dispatches_per_layer(channels, groups, expected):
  """ "cpu" is exactly "hybrid" from 16 channels per group and "polyphase" below (values, grads)."""
  x = jax.random.normal(jax.random.key(4), (2, 29, channels), jnp.float32)
  kw = dict(features=channels, kernel_size=16, stride=2, groups=groups, dtype=jnp.float32)
  y, grads = _conv_value_and_grads("cpu", x, **kw)
  y_ref, grads_ref = _conv_value_and_grads(expected, x, **kw)
  np.testing.assert_array_equal(y, y_ref)
  for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(grads_ref)):
    np.testing.assert_array_equal(a, b)


def test_auto_resolves_by_backend():
  assert jax.default_backend() == "cpu"
  assert conv_cpu.resolve_conv_impl("auto") == "cpu"
  assert conv_cpu.resolve_conv_impl("xla") == "xla"
  assert [conv_cpu.auto_conv_impl(p) for p in ("cpu", "tpu", "gpu")] == ["cpu", "tpu", "xla"]
  assert net1d.Net1D().conv_impl == "auto"
  with pytest.raises(ValueError, match="conv_impl"):
    conv_cpu.resolve_conv_impl("fft")


@pytest.mark.parametrize(
  "groups,in_per_group,merge", [(4, 4, 2), (64, 1, 8), (4, 16, 1), (3, 4, 3), (2, 1, 2), (1, 2, 1)]
)
def test_tpu_merges_narrow_groups(groups, in_per_group, merge):
  """The fewest adjacent groups (a divisor) that reach 8 input channels, all when none does; the
  compiled conv has that many fewer groups (values: the parity tests above)."""
  assert conv_cpu._tpu_merge_factor(groups, in_per_group) == merge
  channels = groups * in_per_group
  x = jnp.zeros((2, 40, channels), jnp.float32)
  kernel = jnp.zeros((16, in_per_group, channels), jnp.float32)
  text = (
    jax.jit(functools.partial(conv_cpu.conv1d_same, stride=2, groups=groups, impl="tpu"))
    .lower(x, kernel)
    .as_text()
  )
  assert f"feature_group_count = {groups // merge} " in text


def test_tpu_merged_kernel_is_block_diagonal():
  """Each output channel reads only its own group's inputs: a one-hot input in group j changes
  only group j's outputs, exactly as the grouped conv does."""
  groups, in_per_group, out_per_group = 4, 2, 3
  channels = groups * in_per_group
  kernel = jax.random.normal(jax.random.key(0), (16, in_per_group, groups * out_per_group))
  for c in range(channels):
    x = jnp.zeros((1, 40, channels)).at[0, 20, c].set(1.0)
    y = conv_cpu.conv1d_same(x, kernel, stride=1, groups=groups, impl="tpu")
    ref = conv_cpu.conv1d_same(x, kernel, stride=1, groups=groups, impl="xla")
    touched = np.flatnonzero(np.abs(np.asarray(y)).sum(axis=(0, 1)))
    own = range(c // in_per_group * out_per_group, (c // in_per_group + 1) * out_per_group)
    assert set(touched) == set(own), c
    np.testing.assert_allclose(y, ref, rtol=1e-6, atol=1e-6)


def test_swish_gradient_matches_autodiff():
  x = jnp.linspace(-30.0, 30.0, 1001, dtype=jnp.float32)
  reference = jax.vmap(jax.grad(lambda v: v * jax.nn.sigmoid(v)))(x)
  np.testing.assert_allclose(jax.vmap(jax.grad(net1d.swish))(x), reference, rtol=1e-6, atol=1e-7)
  np.testing.assert_array_equal(net1d.swish(x), x * jax.nn.sigmoid(x))


def test_max_pool_gradient_splits_ties_like_max_reduce():
  x = jnp.array([[[1.0], [1.0], [2.0], [0.5], [-1.0]]])  # a tie, a clear max, odd length.

  def reduce_version(x):
    return jnp.max(jnp.pad(x, ((0, 0), (0, 1), (0, 0))).reshape(1, -1, 2, 1), axis=2)

  weights = jnp.array([[[1.0], [10.0], [100.0]]])
  g = jax.grad(lambda x: jnp.sum(net1d.max_pool2_same(x) * weights))(x)
  g_ref = jax.grad(lambda x: jnp.sum(reduce_version(x) * weights))(x)
  np.testing.assert_array_equal(net1d.max_pool2_same(x), reduce_version(x))
  np.testing.assert_array_equal(g, g_ref)
  np.testing.assert_array_equal(g[0, :, 0], [0.5, 0.5, 10.0, 0.0, 0.0])


@pytest.mark.parametrize("length,stride", [(40, 1), (37, 1), (5, 1), (1, 1), (40, 2), (37, 2)])
@pytest.mark.parametrize("groups", [1, 4])
def test_weight_gradient_as_a_forward_conv(length, stride, groups):
  """`_conv_weight_grad` (the hybrid's stride-1 kernel gradient) == autodiff of the XLA conv, f64.

  Checked for stride 2 too: the formula holds for any stride (the kernel is dilated)."""
  with jax.enable_x64():
    rng = np.random.default_rng(length + stride)
    k, cin, cout = 16, 8, 12
    x = jnp.asarray(rng.standard_normal((3, length, cin)))
    kernel = jnp.asarray(rng.standard_normal((k, cin // groups, cout)))
    y, vjp = jax.vjp(lambda w: conv_cpu._conv_xla(x, w, stride=stride, groups=groups), kernel)
    g = jnp.asarray(rng.standard_normal(y.shape))
    (expected,) = vjp(g)
    got = conv_cpu._conv_weight_grad(x, g, kernel_size=k, stride=stride, groups=groups)
    assert got.shape == kernel.shape and got.dtype == jnp.float64
    assert _rel_err(got, expected) <= 1e-12
