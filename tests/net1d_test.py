"""Tests for the Flax Net1D backbone (docs/method.md §A): §A.6 test vector, shapes, counts, param paths."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from clef_jax.models import conv_cpu, create_backbone, layers, net1d

# docs/method.md §A.6 [RUN, float64 in the official PyTorch code].
A6_OUT8 = [
  0.046071095321085456,
  0.1199857271434754,
  0.10567602184197063,
  0.01759886367779922,
  -0.042850763709694525,
  -0.03301738768006744,
  -0.025419549522536174,
  -0.06807504843085822,
]
A6_SUM, A6_NORM = 1.0677673744181218, 1.2226076034401208
A6_OUT4_L2500 = [
  0.046071610838644826,
  0.11998690623408197,
  0.10567742803629576,
  0.017600159519609353,
]
A6_SUM_L2500 = 1.1019307456513916
# point -> (shape in torch layout (1, C, L), sum, mean |.|).
A6_INTERMEDIATES = {
  "stem": ((1, 32, 2500), 43.87583257583056, None),
  0: ((1, 32, 1250), 25.1113206739, 0.0206244280),
  1: ((1, 64, 625), 84.8111097086, 0.0158509274),
  2: ((1, 64, 313), 110.7517677408, 0.0364487991),
  3: ((1, 128, 157), 55.1803935537, 0.0404133103),
  4: ((1, 128, 79), 35.2174238541, 0.0559153904),
  5: ((1, 256, 40), 42.7106949767, 0.0625194976),
}

# The full param tree of `small` (1 lead): "module kernel_shape bias_shape". Parameter paths are a
# public API (checkpoints and the PyTorch export key on them): a rename must fail here.
SMALL_PARAMS = """
    stem_conv (16,1,32) (32,)
    stage0_block0/conv1 (1,32,16) (16,)
    stage0_block0/conv2 (16,4,16) (16,)
    stage0_block0/conv3 (1,16,32) (32,)
    stage0_block0/se_fc1 (32,16) (16,)
    stage0_block0/se_fc2 (16,32) (32,)
    stage1_block0/conv1 (1,32,32) (32,)
    stage1_block0/conv2 (16,4,32) (32,)
    stage1_block0/conv3 (1,32,64) (64,)
    stage1_block0/se_fc1 (64,32) (32,)
    stage1_block0/se_fc2 (32,64) (64,)
    stage2_block0/conv1 (1,64,32) (32,)
    stage2_block0/conv2 (16,4,32) (32,)
    stage2_block0/conv3 (1,32,64) (64,)
    stage2_block0/se_fc1 (64,32) (32,)
    stage2_block0/se_fc2 (32,64) (64,)
    stage2_block1/conv1 (1,64,32) (32,)
    stage2_block1/conv2 (16,4,32) (32,)
    stage2_block1/conv3 (1,32,64) (64,)
    stage2_block1/se_fc1 (64,32) (32,)
    stage2_block1/se_fc2 (32,64) (64,)
    stage3_block0/conv1 (1,64,64) (64,)
    stage3_block0/conv2 (16,4,64) (64,)
    stage3_block0/conv3 (1,64,128) (128,)
    stage3_block0/se_fc1 (128,64) (64,)
    stage3_block0/se_fc2 (64,128) (128,)
    stage3_block1/conv1 (1,128,64) (64,)
    stage3_block1/conv2 (16,4,64) (64,)
    stage3_block1/conv3 (1,64,128) (128,)
    stage3_block1/se_fc1 (128,64) (64,)
    stage3_block1/se_fc2 (64,128) (128,)
    stage4_block0/conv1 (1,128,64) (64,)
    stage4_block0/conv2 (16,4,64) (64,)
    stage4_block0/conv3 (1,64,128) (128,)
    stage4_block0/se_fc1 (128,64) (64,)
    stage4_block0/se_fc2 (64,128) (128,)
    stage4_block1/conv1 (1,128,64) (64,)
    stage4_block1/conv2 (16,4,64) (64,)
    stage4_block1/conv3 (1,64,128) (128,)
    stage4_block1/se_fc1 (128,64) (64,)
    stage4_block1/se_fc2 (64,128) (128,)
    stage5_block0/conv1 (1,128,128) (128,)
    stage5_block0/conv2 (16,4,128) (128,)
    stage5_block0/conv3 (1,128,256) (256,)
    stage5_block0/se_fc1 (256,128) (128,)
    stage5_block0/se_fc2 (128,256) (256,)
    stage5_block1/conv1 (1,256,128) (128,)
    stage5_block1/conv2 (16,4,128) (128,)
    stage5_block1/conv3 (1,128,256) (256,)
    stage5_block1/se_fc1 (256,128) (128,)
    stage5_block1/se_fc2 (128,256) (256,)
"""


pytestmark = pytest.mark.usefixtures("fast_compiles_module")


def _param_shapes(size, in_channels=1, num_classes=None, length=64):
  """Abstract param tree (no allocation, no compile)."""
  model = create_backbone("net1d", size, in_channels=in_channels, num_classes=num_classes)
  x = jax.ShapeDtypeStruct((1, length, in_channels), jnp.float32)
  return jax.eval_shape(model.init, jax.random.PRNGKey(0), x)["params"]


def _flat(tree):
  return {
    "/".join(k.key for k in path): leaf
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
  }


def _a6_params(dtype):
  """docs/method.md §A.6 weights, built from the spec text alone (independent of `clef_jax.export`).

  Tensor t in PyTorch `named_parameters()` order (BN excluded) is filled, in PyTorch row-major
  layout, with 0.05 * sin(1.37 k + 0.71 t + 0.3); then moved to Flax layout.
  """
  v = net1d.VARIANTS["small"]
  modules = [("stem_conv", "conv", (v.base_filters, 1, v.kernel_size))]  # torch weight shapes
  for s in net1d.block_specs(v):
    i, o, m, g = s["in_ch"], s["out_ch"], s["mid_ch"], s["groups"]
    block = f"stage{s['stage']}_block{s['block']}"
    modules += [
      (f"{block}/conv1", "conv", (m, i, 1)),
      (f"{block}/conv2", "conv", (m, m // g, v.kernel_size)),
      (f"{block}/conv3", "conv", (o, m, 1)),
      (f"{block}/se_fc1", "linear", (o // 2, o)),
      (f"{block}/se_fc2", "linear", (o, o // 2)),
    ]
  params, t = {}, 0
  for path, kind, weight_shape in modules:
    node = params
    for key in path.split("/"):
      node = node.setdefault(key, {})
    for name, shape in (("kernel", weight_shape), ("bias", weight_shape[:1])):
      k = np.arange(math.prod(shape), dtype=np.float64)
      value = (0.05 * np.sin(1.37 * k + 0.71 * t + 0.3)).reshape(shape)
      t += 1
      if name == "kernel":
        # torch conv (O, I/g, K) -> Flax (K, I/g, O); torch linear (O, I) -> Flax (I, O).
        value = value.transpose(2, 1, 0) if kind == "conv" else value.T
      node[name] = value.astype(dtype)
  assert t == 102  # spec: 102 tensors.
  return params


def _a6_input(length=5000):
  n = np.arange(5000, dtype=np.float64)
  x = np.sin(2 * np.pi * 1.3 * n / 500) + 0.1 * np.cos(2 * np.pi * 7 * n / 500)
  return x[:length].reshape(1, length, 1)  # (B, L, C)


def _assert_rel(actual, expected, rtol, what):
  actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
  err = np.max(np.abs(actual - expected)) / np.max(np.abs(expected))
  assert err <= rtol, f"{what}: relative error {err:.3e} > {rtol:.0e}"


def test_spec_a6_vector_float64():
  with jax.enable_x64(True):
    model = create_backbone("net1d", "small", dtype=jnp.float64)
    params = _a6_params(np.float64)
    # Returns ((embedding, aux), {"intermediates": every submodule's __call__ output}).
    apply = jax.jit(functools.partial(model.apply, capture_intermediates=True))
    (out, _), inter = apply({"params": params}, _a6_input())
    out = np.asarray(out)
    assert out.dtype == np.float64 and out.shape == (1, 256)
    _assert_rel(out[0, :8], A6_OUT8, 1e-9, "out[0:8]")
    _assert_rel(out.sum(), A6_SUM, 1e-9, "sum")
    _assert_rel(np.linalg.norm(out), A6_NORM, 1e-9, "L2 norm")

    # Intermediate points. The spec quotes sums to ~1e-10 absolute, hence the looser tolerance.
    inter = inter["intermediates"]
    stem = np.asarray(net1d.swish(inter["stem_conv"]["__call__"][0]))
    points = {"stem": stem}
    v = net1d.VARIANTS["small"]
    for s, n_blocks in enumerate(v.m_blocks_list):
      points[s] = np.asarray(inter[f"stage{s}_block{n_blocks - 1}"]["__call__"][0])
    for point, (shape, total, mean_abs) in A6_INTERMEDIATES.items():
      h = points[point]  # (1, L, C) channels-last
      assert h.shape == (shape[0], shape[2], shape[1]), point
      _assert_rel(h.sum(), total, 1e-8, f"sum after {point}")
      if mean_abs is not None:
        _assert_rel(np.abs(h).mean(), mean_abs, 1e-8, f"mean|.| after {point}")

    out2500 = np.asarray(apply({"params": params}, _a6_input(2500))[0][0])
    _assert_rel(out2500[0, :4], A6_OUT4_L2500, 1e-9, "out[0:4] at L=2500")
    _assert_rel(out2500.sum(), A6_SUM_L2500, 1e-9, "sum at L=2500")


def test_spec_a6_vector_float32():
  model = create_backbone("net1d", "small")
  params = _a6_params(np.float32)
  out = np.asarray(jax.jit(model.apply)({"params": params}, _a6_input().astype(np.float32))[0])
  assert out.dtype == np.float32
  _assert_rel(out[0, :8], A6_OUT8, 1e-5, "float32 out[0:8]")
  _assert_rel(out.sum(), A6_SUM, 1e-5, "float32 sum")
  _assert_rel(np.linalg.norm(out), A6_NORM, 1e-5, "float32 L2 norm")


def test_same_pads_match_spec():
  # docs/method.md §A.2: k=16, s=2: (7, 7) for even L, (7, 8) for odd L; k=16, s=1: (7, 8); k=1: none.
  assert conv_cpu.same_pads(5000, 16, 2) == (7, 7)
  assert conv_cpu.same_pads(625, 16, 2) == (7, 8)
  assert conv_cpu.same_pads(313, 16, 1) == (7, 8)
  assert conv_cpu.same_pads(313, 1, 1) == (0, 0)


def test_max_pool_pads_with_zero_not_minus_inf():
  x = -np.arange(1.0, 6.0, dtype=np.float32).reshape(1, 5, 1)  # all negative, odd length
  y = np.asarray(net1d.max_pool2_same(jnp.asarray(x)))
  np.testing.assert_array_equal(y[0, :, 0], [-1.0, -3.0, 0.0])  # last: max(x[4], 0) = 0


@pytest.mark.parametrize("size,dim", [("small", 256), ("medium", 1024)])
@pytest.mark.parametrize("length", [5000, 2500, 1000])
def test_output_shapes(size, dim, length):
  model = create_backbone("net1d", size)
  params = _param_shapes(size)
  x = jax.ShapeDtypeStruct((2, length, 1), jnp.float32)
  out, aux = jax.eval_shape(model.apply, {"params": params}, x)
  assert out.shape == (2, dim) and out.dtype == jnp.float32
  assert aux["embedding"].shape == (2, dim)


def _random_params(size, in_channels=1, num_classes=None, seed=0):
  """Random float32 params of the right shapes, U(+-1/sqrt(fan_in)), without compiling `init`.

  (Compiling the full `init` costs ~10x compiling `apply` on CPU.)
  """
  rng = np.random.default_rng(seed)
  shapes = _param_shapes(size, in_channels, num_classes)
  flat = {path: leaf.shape for path, leaf in _flat(shapes).items()}
  out = {}
  for path, shape in flat.items():
    fan_in = math.prod(flat[path.rsplit("/", 1)[0] + "/kernel"][:-1])
    out[path] = rng.uniform(-1, 1, shape).astype(np.float32) / np.float32(math.sqrt(fan_in))
  return jax.tree_util.tree_map_with_path(lambda p, _: out["/".join(k.key for k in p)], shapes)


def test_length_one_runs():
  model = create_backbone("net1d", "small")
  x = np.random.default_rng(0).normal(size=(2, 1, 1)).astype(np.float32)
  out, _ = jax.jit(model.apply)({"params": _random_params("small")}, x)
  out = np.asarray(out)
  assert out.shape == (2, 256)
  assert np.all(np.isfinite(out)) and np.any(out[0] != out[1])


def test_small_param_paths_are_pinned():
  expected = {}
  for line in SMALL_PARAMS.strip().splitlines():
    module, kernel, bias = line.split()
    expected[f"{module}/kernel"] = tuple(int(d) for d in kernel.strip("(,)").split(","))
    expected[f"{module}/bias"] = tuple(int(d) for d in bias.strip("(,)").split(",") if d)
  actual = {path: tuple(leaf.shape) for path, leaf in _flat(_param_shapes("small")).items()}
  assert len(expected) == 102
  assert actual == expected


def test_head_adds_dense():
  flat = _flat(_param_shapes("medium", in_channels=12, num_classes=150))
  assert flat["dense/kernel"].shape == (1024, 150) and flat["dense/bias"].shape == (150,)
  assert flat["stem_conv/kernel"].shape == (16, 12, 64)


@pytest.mark.parametrize(
  "size,used,paper",
  [
    ("small", 443_184, 447_792),
    ("medium", 30_587_632, 30_654_000),
    ("large", 296_301_312, 296_623_360),
  ],
)
def test_param_counts(size, used, paper):
  # docs/method.md §A.4: "used" = the Flax tree; "paper" adds the never-used BN weight/bias.
  assert layers.num_params(_param_shapes(size)) == used
  assert net1d.used_param_count(size) == used
  assert net1d.paper_param_count(size) == paper


def test_init_matches_torch_default_bounds():
  # PyTorch default init: weights and biases ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)). One block
  # (small's stage5_block0: grouped k16 conv, 1x1 convs, SE linears) exercises both Conv1D and
  # Dense initialisers at several fan-ins, at a fraction of the compile cost of the whole net.
  block = net1d.BasicBlock(in_ch=128, out_ch=256, mid_ch=128, groups=32, stride=2, is_first=False)
  params = jax.jit(block.init)(jax.random.PRNGKey(0), jnp.zeros((1, 4, 128)))["params"]
  flat = _flat(params)
  assert sorted({p.split("/")[0] for p in flat}) == ["conv1", "conv2", "conv3", "se_fc1", "se_fc2"]
  for path, leaf in flat.items():
    kernel = np.asarray(flat[path.rsplit("/", 1)[0] + "/kernel"])
    fan_in = math.prod(kernel.shape[:-1])  # conv (K, I/g, O): K * I/g; dense (I, O): I
    bound = 1 / math.sqrt(fan_in)
    a = np.asarray(leaf)
    assert a.dtype == np.float32
    assert np.abs(a).max() <= bound, path
    assert np.abs(a).max() > 0.9 * bound, path  # every tensor here has >= 128 entries
    if a.size >= 1000:
      assert abs(a.std() - bound / math.sqrt(3)) < 0.1 * bound, path


def test_custom_variant():
  """A Net1DVariant as `size`: a two-stage net with the named sizes' block semantics."""
  v = net1d.Net1DVariant(
    base_filters=32, ratio=0.5, filter_list=(32, 64), m_blocks_list=(1, 2), groups_width=8
  )
  model = net1d.Net1D(size=v)
  x = jax.ShapeDtypeStruct((2, 300, 1), jnp.float32)
  shapes = jax.eval_shape(model.init, jax.random.key(0), x)["params"]
  assert sorted(shapes) == ["stage0_block0", "stage1_block0", "stage1_block1", "stem_conv"]
  # The named sizes' rules: groups = out_ch // groups_width, mid = out_ch * ratio.
  assert shapes["stage1_block1"]["conv2"]["kernel"].shape == (16, 32 // 8, 32)
  assert layers.num_params(shapes) == net1d.used_param_count(v)
  out, _ = jax.eval_shape(model.apply, {"params": shapes}, x)
  assert out.shape == (2, 64)
  with pytest.raises(ValueError, match="Unknown Net1D size 'tiny'"):
    jax.eval_shape(net1d.Net1D(size="tiny").init, jax.random.key(0), x)
