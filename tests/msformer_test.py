"""Tests for the MSFormer backbone, its PyTorch twin and the state-dict interop."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from clef_jax.export import msformer_interop, strict
from clef_jax.models import msformer, net1d

try:
  import torch
except ImportError:  # pragma: no cover
  torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="torch not installed")

# Net1D's trainable parameters (docs/method.md §A.4, "params actually used").
NET1D_PARAMS = {"small": 443_184, "medium": 30_587_632, "large": 296_301_312}
MSFORMER_PARAMS = {"small": 429_280, "medium": 31_590_272, "large": 298_340_608}

# Module path (sorted), then each leaf's shape (sorted leaf names: bias before kernel/scale).
SMALL_PATHS = """
fusion (256,) (256, 256)
patch_embed (32,) (10, 32)
stage0_block0/attn/key (32,) (32, 32)
stage0_block0/attn/out (32,) (32, 32)
stage0_block0/attn/query (32,) (32, 32)
stage0_block0/attn/value (32,) (32, 32)
stage0_block0/mlp/fc1 (128,) (32, 128)
stage0_block0/mlp/fc2 (32,) (128, 32)
stage0_block0/norm1 (32,) (32,)
stage0_block0/norm2 (32,) (32,)
stage0_block1/attn/key (32,) (32, 32)
stage0_block1/attn/out (32,) (32, 32)
stage0_block1/attn/query (32,) (32, 32)
stage0_block1/attn/value (32,) (32, 32)
stage0_block1/mlp/fc1 (128,) (32, 128)
stage0_block1/mlp/fc2 (32,) (128, 32)
stage0_block1/norm1 (32,) (32,)
stage0_block1/norm2 (32,) (32,)
stage0_norm (32,) (32,)
stage1_block0/attn/key (64,) (64, 64)
stage1_block0/attn/out (64,) (64, 64)
stage1_block0/attn/query (64,) (64, 64)
stage1_block0/attn/value (64,) (64, 64)
stage1_block0/mlp/fc1 (256,) (64, 256)
stage1_block0/mlp/fc2 (64,) (256, 64)
stage1_block0/norm1 (64,) (64,)
stage1_block0/norm2 (64,) (64,)
stage1_block1/attn/key (64,) (64, 64)
stage1_block1/attn/out (64,) (64, 64)
stage1_block1/attn/query (64,) (64, 64)
stage1_block1/attn/value (64,) (64, 64)
stage1_block1/mlp/fc1 (256,) (64, 256)
stage1_block1/mlp/fc2 (64,) (256, 64)
stage1_block1/norm1 (64,) (64,)
stage1_block1/norm2 (64,) (64,)
stage1_merge/norm (64,) (64,)
stage1_merge/proj (64,) (64, 64)
stage1_norm (64,) (64,)
stage2_block0/attn/key (64,) (64, 64)
stage2_block0/attn/out (64,) (64, 64)
stage2_block0/attn/query (64,) (64, 64)
stage2_block0/attn/value (64,) (64, 64)
stage2_block0/mlp/fc1 (256,) (64, 256)
stage2_block0/mlp/fc2 (64,) (256, 64)
stage2_block0/norm1 (64,) (64,)
stage2_block0/norm2 (64,) (64,)
stage2_block1/attn/key (64,) (64, 64)
stage2_block1/attn/out (64,) (64, 64)
stage2_block1/attn/query (64,) (64, 64)
stage2_block1/attn/value (64,) (64, 64)
stage2_block1/mlp/fc1 (256,) (64, 256)
stage2_block1/mlp/fc2 (64,) (256, 64)
stage2_block1/norm1 (64,) (64,)
stage2_block1/norm2 (64,) (64,)
stage2_merge/norm (128,) (128,)
stage2_merge/proj (64,) (128, 64)
stage2_norm (64,) (64,)
stage3_block0/attn/key (96,) (96, 96)
stage3_block0/attn/out (96,) (96, 96)
stage3_block0/attn/query (96,) (96, 96)
stage3_block0/attn/value (96,) (96, 96)
stage3_block0/mlp/fc1 (384,) (96, 384)
stage3_block0/mlp/fc2 (96,) (384, 96)
stage3_block0/norm1 (96,) (96,)
stage3_block0/norm2 (96,) (96,)
stage3_merge/norm (128,) (128,)
stage3_merge/proj (96,) (128, 96)
stage3_norm (96,) (96,)
"""


pytestmark = pytest.mark.usefixtures("fast_compiles_module")


@functools.cache
def _abstract(size, in_channels=1, num_classes=None, length=5000):
  """((out, aux), params) as ShapeDtypeStructs: no allocation, no compile (works for `large`)."""
  model = msformer.MSFormer(size=size, in_channels=in_channels, num_classes=num_classes)
  x = jax.ShapeDtypeStruct((2, length, in_channels), jnp.float32)
  outputs, variables = jax.eval_shape(model.init_with_output, jax.random.PRNGKey(0), x)
  return outputs, variables["params"]


def _abstract_params(size, in_channels=1, num_classes=None):
  return _abstract(size, in_channels, num_classes)[1]


def _flat(tree):
  return {
    "/".join(k.key for k in path): leaf
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
  }


def _random_params(size, in_channels=1, num_classes=None, seed=0):
  """Random float32 params from the interop table (numpy: no init compile).

  Every tensor, LayerNorm scales and biases included, is random, so the parity tests see every
  mapping.
  """
  rng = np.random.default_rng(seed)
  flat = {}
  for e in msformer_interop.param_table(size, in_channels, num_classes):
    if e.flax_path[-1] == "kernel":
      a = rng.normal(0.0, 1.0 / np.sqrt(e.flax_shape[0]), e.flax_shape)
    elif e.flax_path[-1] == "scale":
      a = 1.0 + 0.1 * rng.normal(size=e.flax_shape)
    else:
      a = 0.1 * rng.normal(size=e.flax_shape)
    flat[e.flax_path] = a.astype(np.float32)
  return strict.unflatten(flat)


def _signal(batch, length, channels=1, seed=1):
  return np.random.default_rng(seed).normal(size=(batch, length, channels)).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Sizes, parameter budgets and paths.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", ["small", "medium", "large"])
def test_param_count_within_10_percent_of_net1d(size):
  flat = _flat(_abstract_params(size))
  n = sum(int(np.prod(a.shape)) for a in flat.values())
  assert all(a.dtype == jnp.float32 for a in flat.values())
  assert n == MSFORMER_PARAMS[size] == msformer.param_count(size)
  assert net1d.used_param_count(size) == NET1D_PARAMS[size]
  assert 0.9 <= n / NET1D_PARAMS[size] <= 1.1


@pytest.mark.parametrize(
  "size,in_channels,num_classes",
  [("small", 1, None), ("small", 12, 5), ("medium", 1, None), ("large", 1, None)],
)
def test_interop_table_matches_flax_params(size, in_channels, num_classes):
  flat = _flat(_abstract_params(size, in_channels, num_classes))
  table = {
    "/".join(e.flax_path): e.flax_shape
    for e in msformer_interop.param_table(size, in_channels, num_classes)
  }
  assert {k: tuple(a.shape) for k, a in flat.items()} == table
  assert msformer.param_count(size, in_channels, num_classes) == sum(
    int(np.prod(s)) for s in table.values()
  )


def test_param_paths_small_are_pinned():
  flat = _flat(_abstract_params("small"))
  modules = {}
  for path in sorted(flat):
    module, _ = path.rsplit("/", 1)
    modules.setdefault(module, []).append(str(tuple(flat[path].shape)))
  got = "\n".join(f"{m} {' '.join(shapes)}" for m, shapes in sorted(modules.items()))
  assert got == SMALL_PATHS.strip()


def test_stage_token_counts():
  assert msformer.stage_token_counts(30_000) == (3000, 1500, 750, 375)
  assert msformer.stage_token_counts(5000) == (500, 250, 125, 63)
  assert msformer.stage_token_counts(6001) == (601, 301, 151, 76)
  assert msformer.stage_token_counts(1) == (1, 1, 1, 1)


# ---------------------------------------------------------------------------------------------
# Forward pass: shapes, parity with the PyTorch twin, dtypes, masking, gradients.
#
# XLA compiles dominate this file's run time, so each test compiles the Flax model once and uses
# the (eager, compile-free) torch twin as its reference wherever one is needed.
# ---------------------------------------------------------------------------------------------


def _twin(size, params, in_channels=1, num_classes=None, **kwargs):
  from clef_jax.export.torch_msformer import TorchMSFormer  # pylint: disable=g-import-not-at-top

  twin = TorchMSFormer(size, in_channels=in_channels, num_classes=num_classes, **kwargs)
  twin.load_state_dict(
    msformer_interop.msformer_to_torch_state_dict(params, size=size, in_channels=in_channels),
    strict=True,
  )
  return twin


def _twin_forward(twin, x):
  """(B, L, C) numpy -> the twin's (out, aux) as numpy; the twin is channels-first."""
  with torch.no_grad():
    out, aux = twin(torch.from_numpy(x.transpose(0, 2, 1).copy()), return_aux=True)
  return out.numpy(), {k: v.numpy() for k, v in aux.items()}


def _assert_close(got, want, tol=1e-5):
  """max|diff| <= tol * max|want| (exact zeros where `want` is all zero)."""
  got, want = np.asarray(got), np.asarray(want)
  assert got.shape == want.shape
  scale = np.abs(want).max()
  if scale == 0:  # E.g. q/k gradients of a one-token stage: softmax over one key is constant.
    assert np.abs(got).max() == 0
    return
  err = np.abs(got - want).max() / scale
  assert err <= tol, f"relative error {err:.2e} > {tol:.0e}"


@pytest.mark.parametrize("size,length", [("small", 1), ("small", 30_000), ("large", 5000)])
def test_forward_shapes_abstract(size, length):
  """One sample, 60 s (windowed attention in stages 0-2) and large: shapes via eval_shape.

  Real forward passes at 97, 2500, 5000 and 6001 samples run in the parity tests below.
  """
  (out, aux), _ = _abstract(size, length=length)
  v = msformer.VARIANTS[size]
  assert out.shape == (2, v.features) and out.dtype == jnp.float32
  assert aux["embedding"].shape == (2, v.features)
  assert [aux[f"stage{s}_pooled"].shape for s in range(4)] == [(2, w) for w in v.widths]


def test_rejects_bad_input():
  model = msformer.MSFormer(size="small")
  params = _abstract_params("small")
  for shape in [(2, 100, 12), (100, 1), (2, 0, 1)]:
    with pytest.raises(ValueError):
      jax.eval_shape(model.apply, {"params": params}, jax.ShapeDtypeStruct(shape, jnp.float32))


@needs_torch
@pytest.mark.parametrize(
  "size,length,in_channels,num_classes,kwargs",
  [
    ("small", 2500, 1, None, {}),
    ("small", 6001, 1, None, {}),  # Odd; 601 stage-0 tokens -> 5 windows, the last one padded.
    ("small", 97, 12, 3, {}),  # Short and odd (10 -> 5 -> 3 -> 2 tokens); 12 leads + head.
    ("medium", 2500, 1, None, {}),
    # 500 stage-0 tokens in 4 windows (last: 116 real + 12 masked); stage 1 (250) global.
    ("medium", 5000, 1, None, dict(max_global_tokens=256, window_size=128)),
  ],
)
def test_torch_twin_parity(size, length, in_channels, num_classes, kwargs):
  params = _random_params(size, in_channels, num_classes, seed=length)
  batch = 1 if size == "medium" else 2
  x = _signal(batch, length, in_channels, seed=length + 1)
  # create_backbone's keyword set.
  model = msformer.MSFormer(
    size=size,
    in_channels=in_channels,
    dtype=jnp.float32,
    remat=False,
    num_classes=num_classes,
    **kwargs,
  )
  out, aux = jax.jit(model.apply)({"params": params}, x)
  tout, taux = _twin_forward(_twin(size, params, in_channels, num_classes, **kwargs), x)
  assert out.shape == (batch, num_classes or msformer.VARIANTS[size].features)
  _assert_close(out, tout)
  assert set(aux) == set(taux) == {"embedding"} | {f"stage{s}_pooled" for s in range(4)}
  for key in aux:
    _assert_close(aux[key], taux[key])


@needs_torch
def test_bf16_compute_close_to_fp32():
  params = _random_params("small")
  x = _signal(2, 2500)
  ref, _ = _twin_forward(_twin("small", params), x)  # float32 reference.
  out, aux = jax.jit(msformer.MSFormer(size="small", dtype=jnp.bfloat16).apply)(
    {"params": params}, x
  )
  # The embedding, pooled features and the fusion layer stay float32.
  assert out.dtype == jnp.float32 and aux["stage0_pooled"].dtype == jnp.float32
  _assert_close(out, ref, tol=0.05)
  out = np.asarray(out)
  cos = np.sum(out * ref, 1) / np.linalg.norm(out, axis=1) / np.linalg.norm(ref, axis=1)
  assert cos.min() > 0.999


def test_single_padded_window_equals_global_attention():
  """A block whose 25 tokens sit in one 40-token window (15 masked pad keys) == global attention.

  If the pad keys got any weight the two would differ (pad keys are zero vectors: logit 0).
  """
  x = jnp.asarray(_signal(2, 25 * 64).reshape(2, 25, 64))
  cos, sin = msformer.rope_tables(25, 1, 32)
  block = lambda **kw: msformer.Block(2, 4, **kw)
  params = jax.jit(block(max_global_tokens=25, window_size=40).init)(
    jax.random.PRNGKey(0), x, cos, sin
  )
  glob = jax.jit(block(max_global_tokens=25, window_size=40).apply)(params, x, cos, sin)
  win = jax.jit(block(max_global_tokens=24, window_size=40).apply)(params, x, cos, sin)
  _assert_close(win, glob)
  # Sanity: smaller windows do change the result (the windowed path really ran).
  win8 = jax.jit(block(max_global_tokens=24, window_size=8).apply)(params, x, cos, sin)
  assert np.abs(np.asarray(win8) - np.asarray(glob)).max() > 1e-3


@needs_torch
def test_gradients_finite_and_match_torch_with_remat():
  # 70 samples -> 7 stage-0 tokens; max_global_tokens=4 forces windowed attention (with a padded
  # last window) in stages 0 and 1, so the masked path is differentiated too.
  kwargs = dict(max_global_tokens=4, window_size=3)
  params = _random_params("small")
  x = _signal(2, 70)

  def loss(p):
    out, _ = msformer.MSFormer(size="small", remat=True, **kwargs).apply({"params": p}, x)
    return jnp.sum(out**2)

  grads = _flat(jax.jit(jax.grad(loss))(params))
  assert all(np.isfinite(np.asarray(g)).all() for g in grads.values())

  twin = _twin("small", params, **kwargs)
  (twin(torch.from_numpy(x.transpose(0, 2, 1).copy())) ** 2).sum().backward()
  tgrads = _flat(
    msformer_interop.msformer_from_torch_state_dict(
      {k: p.grad for k, p in twin.named_parameters()}, size="small"
    )
  )
  assert set(grads) == set(tgrads)
  for k, g in grads.items():
    _assert_close(g, tgrads[k], tol=1e-4)


def test_block_init():
  """Dense: truncated normal(0.02) kernels (std 0.02 * 0.88), zero biases; LN ones/zeros."""
  x = jnp.zeros((1, 6, 64))
  cos, sin = msformer.rope_tables(6, 0, 32)
  flat = _flat(
    jax.jit(msformer.Block(2, 4, 512, 128).init)(jax.random.PRNGKey(0), x, cos, sin)["params"]
  )
  assert len(flat) == 16
  for k, a in flat.items():
    a = np.asarray(a)
    if k.endswith("kernel"):
      assert 0.015 < a.std() < 0.019 and np.abs(a).max() <= 0.04 + 1e-6, k
    else:
      assert np.all(a == (1.0 if k.endswith("scale") else 0.0)), k


def _np_attention(q, k, v):
  """Plain softmax attention on (N, Dh) arrays, float64."""
  logits = q @ k.T / np.sqrt(q.shape[-1])
  p = np.exp(logits - logits.max(-1, keepdims=True))
  return (p / p.sum(-1, keepdims=True)) @ v


def test_windowed_attention_matches_per_window_reference():
  """Windows are independent, and the padded last window attends to its real keys only."""
  b, n, h, d, w = 2, 45, 2, 8, 16  # 3 windows; the last holds 13 real tokens + 3 pad.
  rng = np.random.default_rng(0)
  q, k, v = (rng.normal(size=(b, n, h, d)).astype(np.float32) for _ in range(3))
  attend = jax.jit(
    msformer.multi_head_attention, static_argnames=("max_global_tokens", "window_size")
  )
  out = np.asarray(attend(q, k, v, max_global_tokens=8, window_size=w))
  ref = np.zeros(out.shape)
  for bi in range(b):
    for hi in range(h):
      for start in range(0, n, w):
        sl = slice(start, min(start + w, n))
        ref[bi, sl, hi] = _np_attention(*(t[bi, sl, hi].astype(np.float64) for t in (q, k, v)))
  np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
  # Global path (n <= max_global_tokens) equals the reference over all tokens.
  out = np.asarray(attend(q, k, v, max_global_tokens=n, window_size=w))
  np.testing.assert_allclose(
    out[0, :, 0],
    _np_attention(*(t[0, :, 0].astype(np.float64) for t in (q, k, v))),
    rtol=1e-5,
    atol=1e-6,
  )


def test_rope_positions_nest_and_are_relative():
  # A stage-(s+1) token sits at the mean of its two children's centres.
  for s in range(3):
    child = msformer.token_positions(20, s)
    np.testing.assert_array_equal(msformer.token_positions(10, s + 1), child.reshape(10, 2).mean(1))
  # Rotated dot products depend only on position differences: stage-1 tokens 0..7 (positions
  # 2i + 0.5) and stage-0 tokens 1, 3, .., 15 (positions 2i + 1) are offset by the same constant.
  rng = np.random.default_rng(0)
  qv, kv = rng.normal(size=(2, 16)).astype(np.float32)

  @jax.jit
  def scores(cos, sin):
    n = cos.shape[0]
    q = msformer.apply_rope(jnp.broadcast_to(qv, (1, n, 1, 16)), cos, sin)[0, :, 0]
    k = msformer.apply_rope(jnp.broadcast_to(kv, (1, n, 1, 16)), cos, sin)[0, :, 0]
    return q @ k.T

  s1 = np.asarray(scores(*msformer.rope_tables(8, 1, 16)))
  s0 = np.asarray(scores(*msformer.rope_tables(16, 0, 16)))[1::2, 1::2]
  np.testing.assert_allclose(s1, s0, rtol=1e-4, atol=1e-4)
  assert np.abs(s1 - s1[0, 0]).max() > 0.1  # ... and they do depend on the offset.


# ---------------------------------------------------------------------------------------------
# Interop.
# ---------------------------------------------------------------------------------------------


@needs_torch
def test_round_trip_bit_identical_and_twin_keys():
  from clef_jax.export.torch_msformer import TorchMSFormer  # pylint: disable=g-import-not-at-top

  params = _random_params("small", 12, 7)
  sd = msformer_interop.msformer_to_torch_state_dict(
    {"params": params}, size="small", in_channels=12
  )
  twin_sd = TorchMSFormer("small", in_channels=12, num_classes=7).state_dict()
  assert list(sd) == list(twin_sd)
  assert all(sd[k].shape == twin_sd[k].shape and sd[k].dtype == torch.float32 for k in sd)
  assert sd["patch_embed.weight"].shape == (32, 120) and sd["dense.weight"].shape == (7, 256)
  back = msformer_interop.msformer_from_torch_state_dict(
    sd, size="small", in_channels=12, num_classes=7
  )
  flat, flat_back = _flat(params), _flat(back)
  assert set(flat) == set(flat_back)
  for k in flat:
    assert flat_back[k].dtype == np.float32 and np.array_equal(flat[k], flat_back[k]), k
  # Numpy state dicts are accepted too, and jax-array params export identically.
  np_sd = {k: v.numpy() for k, v in sd.items()}
  back2 = msformer_interop.msformer_from_torch_state_dict(
    np_sd, size="small", in_channels=12, num_classes=7
  )
  assert all(
    np.array_equal(a, b)
    for a, b in zip(jax.tree_util.tree_leaves(back), jax.tree_util.tree_leaves(back2))
  )


@needs_torch
def test_tampered_state_dicts_raise():
  params = _random_params("small")
  sd = msformer_interop.msformer_to_torch_state_dict(params, size="small")
  load = lambda d, **kw: msformer_interop.msformer_from_torch_state_dict(d, size="small", **kw)

  bad = dict(sd)
  del bad["stage1_block0.attn.key.weight"]
  bad["stage1_block0.attn.qkv.weight"] = torch.zeros(192, 64)
  bad["fusion.weight"] = torch.zeros(256, 255)
  with pytest.raises(ValueError) as e:
    load(bad)
  msg = str(e.value)
  assert "missing (1): stage1_block0.attn.key.weight" in msg
  assert "unexpected (1): stage1_block0.attn.qkv.weight" in msg
  assert "wrong shape (1): fusion.weight (256, 255) != (256, 256)" in msg

  with pytest.raises(ValueError, match="pass num_classes"):
    load({**sd, "dense.weight": torch.zeros(3, 256), "dense.bias": torch.zeros(3)})
  with pytest.raises(ValueError, match="missing .*dense.weight"):
    load(sd, num_classes=3)
  with pytest.raises(ValueError, match="pass in_channels=1"):
    load(sd, in_channels=12)
  with pytest.raises(ValueError, match="Unknown MSFormer size"):
    msformer_interop.msformer_from_torch_state_dict(sd, size="tiny")

  # Flax side: an extra or misshapen param is refused as well.
  extra = {**params, "extra": {"kernel": np.zeros((2, 2), np.float32)}}
  with pytest.raises(ValueError, match="unexpected \\(1\\): extra/kernel"):
    msformer_interop.msformer_to_torch_state_dict(extra, size="small")
  with pytest.raises(ValueError, match="wrong shape \\(1\\): patch_embed/kernel"):
    msformer_interop.msformer_to_torch_state_dict(params, size="small", in_channels=12)
