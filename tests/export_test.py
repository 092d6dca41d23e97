"""Tests for the PyTorch twin and Net1D weight interop (docs/method.md §A.5, §A.6, §I)."""

import collections
import functools
import hashlib
import logging
import math
import os
import pathlib
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from clef_jax.export import (  # noqa: E402
  TorchNet1D,
  from_torch_state_dict,
  load_torch,
  net1d_layout,
  save_torch,
  to_torch_state_dict,
)
from clef_jax.models import create_backbone, net1d  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SPEC = REPO_ROOT.parent / "shared" / "spec" / "clef.md"
# sha256 of spec Appendix 1 (the official `small` state_dict, "key [shape]" per line), so the
# layout stays pinned where the spec is not checked out.
APPENDIX1_SHA256 = "bd75f631ceba0d3b90a4baeea27d7d0ef79e9a1033785c9967373ba3b719b8cb"
KEY_COUNTS = {"small": 257, "medium": 507, "large": 957}
USED = {"small": 443_184, "medium": 30_587_632, "large": 296_301_312}
PAPER = {"small": 447_792, "medium": 30_654_000, "large": 296_623_360}


pytestmark = pytest.mark.usefixtures("fast_compiles_module")


def _flat(tree, prefix=()):
  out = {}
  for k, v in tree.items():
    out.update(_flat(v, prefix + (k,)) if isinstance(v, dict) else {prefix + (k,): v})
  return out


@functools.cache
def _param_shapes(size, in_channels=1, num_classes=None):
  model = create_backbone("net1d", size, in_channels=in_channels, num_classes=num_classes)
  x = jax.ShapeDtypeStruct((1, 64, in_channels), jnp.float32)
  return jax.eval_shape(model.init, jax.random.PRNGKey(0), x)["params"]


def _random_params(size, in_channels=1, num_classes=None, seed=0):
  """Float32 params with the Flax tree's shapes, U(+-1/sqrt(fan_in)) like the real initialiser.

  Drawn in numpy because compiling `init` costs ~10x compiling `apply` on CPU; the parity tests
  only need the shapes to come from the Flax module.
  """
  rng = np.random.default_rng(seed)
  shapes = _flat(
    jax.tree.map(
      lambda s: s.shape,
      _param_shapes(size, in_channels, num_classes),
      is_leaf=lambda s: isinstance(s, jax.ShapeDtypeStruct),
    )
  )
  params = {}
  for path, shape in shapes.items():
    fan_in = math.prod(shapes[path[:-1] + ("kernel",)][:-1])
    node = params
    for k in path[:-1]:
      node = node.setdefault(k, {})
    node[path[-1]] = (rng.uniform(-1, 1, shape) / math.sqrt(fan_in)).astype(np.float32)
  return params


def _assert_params_identical(a, b):
  fa, fb = _flat(a), _flat(b)
  assert sorted(fa) == sorted(fb)
  for path in fa:
    x, y = np.asarray(fa[path]), np.asarray(fb[path])
    assert y.dtype == np.float32 and x.shape == y.shape, path
    assert np.array_equal(x, y), path


def _rel_err(ours, ref):
  return float(np.max(np.abs(ours - ref)) / np.max(np.abs(ref)))


# ---------------------------------------------------------------------------------------------
# Layout table and twin structure.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", ["small", "medium", "large"])
def test_table_flax_side_matches_flax_param_tree(size):
  table = net1d_layout.state_dict_table(size)
  assert len(table) == KEY_COUNTS[size]
  flax = {path: tuple(s.shape) for path, s in _flat(_param_shapes(size)).items()}
  ours = {e.flax_path: e.flax_shape for e in table if e.flax_path is not None}
  assert ours == flax


def test_small_layout_matches_spec_appendix1():
  lines = [
    f"{e.torch_key} [{', '.join(map(str, e.torch_shape))}]"
    for e in net1d_layout.state_dict_table("small")
  ]
  assert hashlib.sha256("\n".join(lines).encode()).hexdigest() == APPENDIX1_SHA256
  if SPEC.is_file():  # Compare line by line too, for a readable diff.
    appendix = SPEC.read_text().split("## Appendix 1.")[1].split("```")[1].strip().splitlines()
    assert lines == appendix


def _twin(size, in_channels=1, num_classes=None, meta=False):
  if meta:  # Shapes only, no memory (large: ~1.2 GB of float32 otherwise).
    with torch.device("meta"):
      return TorchNet1D(size, in_channels, num_classes)
  return TorchNet1D(size, in_channels, num_classes)


@pytest.mark.parametrize("size", ["small", "medium", "large"])
def test_twin_state_dict_is_official_layout(size):
  twin = _twin(size, meta=(size == "large"))
  sd = twin.state_dict()
  assert len(sd) == KEY_COUNTS[size]
  table = net1d_layout.state_dict_table(size)
  assert [(k, tuple(v.shape)) for k, v in sd.items()] == [
    (e.torch_key, e.torch_shape) for e in table
  ]
  for e in table:
    t = sd[e.torch_key]
    if e.torch_key.endswith("num_batches_tracked"):
      assert t.dtype == torch.int64 and t.ndim == 0
    else:
      assert t.dtype == torch.float32
    if e.rule == "bn" and size != "large":
      assert torch.all(t == e.bn_value), e.torch_key
  # Paper-style count includes the unused BN weight/bias; the rest is the Flax tree.
  assert sum(p.numel() for p in twin.parameters()) == PAPER[size]
  assert sum(p.numel() for n, p in twin.named_parameters() if "bn" not in n) == USED[size]


def test_twin_with_head_adds_dense():
  sd = _twin("medium", 12, 150, meta=True).state_dict()
  assert len(sd) == KEY_COUNTS["medium"] + 2
  assert list(sd)[-2:] == ["dense.weight", "dense.bias"]
  assert tuple(sd["dense.weight"].shape) == (150, 1024)
  assert tuple(sd["first_conv.conv.weight"].shape) == (64, 12, 16)


def test_twin_reproduces_spec_a6_vector():
  # The twin checked against the official code's numbers, independently of JAX (docs/method.md §A.6).
  twin = TorchNet1D("small").double()
  named = [(n, p) for n, p in twin.named_parameters() if "bn" not in n]
  assert len(named) == 102
  with torch.no_grad():
    for t, (_, p) in enumerate(named):
      k = torch.arange(p.numel(), dtype=torch.float64)
      p.copy_((0.05 * torch.sin(1.37 * k + 0.71 * t + 0.3)).reshape(p.shape))
    n = torch.arange(5000, dtype=torch.float64)
    x = (
      torch.sin(2 * math.pi * 1.3 * n / 500) + 0.1 * torch.cos(2 * math.pi * 7 * n / 500)
    ).reshape(1, 1, 5000)
    out = twin(x).numpy()
    out2500 = twin(x[..., :2500]).numpy()
  assert out.shape == (1, 256)
  ref8 = [
    0.046071095321085456,
    0.1199857271434754,
    0.10567602184197063,
    0.01759886367779922,
    -0.042850763709694525,
    -0.03301738768006744,
    -0.025419549522536174,
    -0.06807504843085822,
  ]
  assert _rel_err(out[0, :8], np.array(ref8)) <= 1e-9
  assert abs(out.sum() / 1.0677673744181218 - 1) <= 1e-9
  assert abs(np.linalg.norm(out) / 1.2226076034401208 - 1) <= 1e-9
  ref4 = [0.046071610838644826, 0.11998690623408197, 0.10567742803629576, 0.017600159519609353]
  assert _rel_err(out2500[0, :4], np.array(ref4)) <= 1e-9
  assert abs(out2500.sum() / 1.1019307456513916 - 1) <= 1e-9


# ---------------------------------------------------------------------------------------------
# JAX vs twin on random weights.
# ---------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)  # Cases are ordered so each (size, channels) is built once.
def _jax_and_twin(size, in_channels, num_classes=None):
  params = _random_params(size, in_channels, num_classes, seed=in_channels)
  model = create_backbone("net1d", size, in_channels=in_channels, num_classes=num_classes)
  twin = TorchNet1D(size, in_channels, num_classes)
  twin.load_state_dict(to_torch_state_dict(params, size=size, in_channels=in_channels), strict=True)
  return params, jax.jit(model.apply), twin.eval()


def _compare(size, in_channels, length, num_classes=None):
  params, apply, twin = _jax_and_twin(size, in_channels, num_classes)
  x = np.random.default_rng(length).normal(size=(2, length, in_channels)).astype(np.float32)
  ours = np.asarray(apply({"params": params}, x)[0])
  with torch.no_grad():
    ref = twin(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 2, 1)))).numpy()
  assert ours.shape == ref.shape == (2, num_classes or net1d.VARIANTS[size].features)
  return _rel_err(ours, ref)


PARITY_CASES = [
  (size, c, length)
  for size in ("small", "medium")
  for c in (1, 12)
  for length in (5000, 2500, 1001)
]


@pytest.mark.parametrize(
  "size,in_channels,length",
  [
    pytest.param(*case, marks=pytest.mark.slow) if case[0] == "medium" and case[2] != 1001 else case
    for case in PARITY_CASES
  ],
)
def test_jax_matches_torch_twin(size, in_channels, length):
  err = _compare(size, in_channels, length)
  print(f"parity {size} C={in_channels} L={length}: max|diff|/max|out| = {err:.2e}")
  assert err <= 1e-5


# ---------------------------------------------------------------------------------------------
# Files and state dicts.
# ---------------------------------------------------------------------------------------------


def _official_load(path, size, in_channels=1, num_classes=None):
  """What the official CLEF loader does (docs/method.md §I), but with strict=True."""
  ckpt = torch.load(path, map_location="cpu", weights_only=True)
  sd = {k.replace("backbone.", "", 1): v for k, v in ckpt.get("state_dict", ckpt).items()}
  twin = TorchNet1D(size, in_channels, num_classes)
  twin.load_state_dict(sd, strict=True)
  return twin


@pytest.mark.parametrize(
  "fmt,name",
  [
    ("lightning", "clef_small.ckpt"),
    ("state_dict", "net.pth"),
    ("safetensors", "net.safetensors"),
    ("safetensors", "net.bin"),
  ],
)  # detected by magic bytes
def test_round_trip_through_files_is_bit_identical(tmp_path, fmt, name):
  params = _random_params("small", seed=3)
  path = tmp_path / name
  save_torch(params, path, size="small", format=fmt)
  assert os.listdir(tmp_path) == [name]  # no temp file left behind
  _assert_params_identical(params, load_torch(path, size="small"))
  if fmt == "lightning":
    raw = torch.load(path, weights_only=True)
    assert list(raw) == ["state_dict"]
    keys = list(raw["state_dict"])
    assert len(keys) == 257 and all(k.startswith("backbone.") for k in keys)
  if fmt != "safetensors":
    twin = _official_load(path, "small")
  else:
    from safetensors.torch import load_file

    twin = TorchNet1D("small")
    twin.load_state_dict(load_file(path), strict=True)
  w = twin.state_dict()["stage_list.3.block_list.1.conv2.conv.weight"].numpy()
  np.testing.assert_array_equal(w, params["stage3_block1"]["conv2"]["kernel"].transpose(2, 1, 0))


def test_to_torch_state_dict_matches_layout_rules():
  params = _random_params("small", seed=4)
  sd = to_torch_state_dict({"params": params}, size="small")  # variables dict accepted too
  assert isinstance(sd, collections.OrderedDict) and len(sd) == 257
  np.testing.assert_array_equal(
    sd["first_conv.conv.weight"].numpy(), np.transpose(params["stem_conv"]["kernel"], (2, 1, 0))
  )
  np.testing.assert_array_equal(
    sd["stage_list.5.block_list.1.se_fc1.weight"].numpy(),
    params["stage5_block1"]["se_fc1"]["kernel"].T,
  )
  np.testing.assert_array_equal(
    sd["stage_list.0.block_list.0.conv3.conv.bias"].numpy(),
    params["stage0_block0"]["conv3"]["bias"],
  )
  assert all(t.is_contiguous() for t in sd.values())


def test_save_is_atomic(tmp_path, monkeypatch):
  params = _random_params("small", seed=5)
  path = tmp_path / "clef_small.ckpt"
  path.write_bytes(b"previous checkpoint")

  def crashing_save(obj, f):
    pathlib.Path(f).write_bytes(b"half-written")
    raise OSError("disk full")

  monkeypatch.setattr(torch, "save", crashing_save)
  with pytest.raises(OSError, match="disk full"):
    save_torch(params, path, size="small")
  assert path.read_bytes() == b"previous checkpoint"
  assert os.listdir(tmp_path) == ["clef_small.ckpt"]


def test_save_rejects_unknown_format(tmp_path):
  with pytest.raises(ValueError, match="format"):
    save_torch(_random_params("small"), tmp_path / "x", size="small", format="onnx")
  assert not os.listdir(tmp_path)


def _small_sd(seed=6):
  return to_torch_state_dict(_random_params("small", seed=seed), size="small")


def test_missing_extra_and_misshaped_keys_raise_with_names():
  sd = _small_sd()
  del sd["stage_list.2.block_list.1.conv2.conv.bias"]
  sd["stage_list.9.block_list.0.conv1.conv.weight"] = torch.zeros(1)
  sd["stage_list.4.block_list.0.se_fc2.weight"] = torch.zeros(128, 63)
  with pytest.raises(ValueError) as e:
    from_torch_state_dict(sd, size="small")
  msg = str(e.value)
  assert "missing (1): stage_list.2.block_list.1.conv2.conv.bias" in msg
  assert "unexpected (1): stage_list.9.block_list.0.conv1.conv.weight" in msg
  assert "stage_list.4.block_list.0.se_fc2.weight (128, 63) != (128, 64)" in msg


@pytest.mark.parametrize(
  "tamper,expected",
  [
    (lambda sd: sd.pop("first_conv.conv.weight"), "missing (1): first_conv.conv.weight"),
    (lambda sd: sd.__setitem__("projector.weight", torch.zeros(2)), "unexpected (1): projector"),
    (
      lambda sd: sd.__setitem__("first_bn.running_var", torch.ones(31)),
      "first_bn.running_var (31,) != (32,)",
    ),  # optional BN entries are still shape-checked
  ],
)
def test_single_tampering_raises(tamper, expected):
  sd = _small_sd()
  tamper(sd)
  with pytest.raises(ValueError, match=re.escape(expected)):
    from_torch_state_dict(sd, size="small")


def test_wrong_in_channels_hint():
  sd = to_torch_state_dict(_random_params("small", 12), size="small", in_channels=12)
  with pytest.raises(ValueError, match="pass in_channels=12"):
    from_torch_state_dict(sd, size="small")


def test_to_torch_state_dict_validates_params():
  params = _random_params("small")
  del params["stage1_block0"]["se_fc1"]
  params["extra"] = {"kernel": np.zeros(3, np.float32)}
  with pytest.raises(ValueError) as e:
    to_torch_state_dict(params, size="small")
  assert "stage1_block0/se_fc1/kernel" in str(e.value) and "extra/kernel" in str(e.value)
  with pytest.raises(ValueError, match="size"):
    to_torch_state_dict(_random_params("small"), size="tiny")


def test_lightning_checkpoint_with_byol_and_moco_extras_loads(caplog):
  params = _random_params("small", seed=7)
  sd = to_torch_state_dict(params, size="small")
  state = collections.OrderedDict((f"backbone.{k}", v) for k, v in sd.items())
  state.update((f"backbone_target.{k}", v + 1) for k, v in sd.items())  # BYOL EMA target
  state["predictor.0.weight"] = torch.zeros(128, 256)
  state.update((f"backbone_k.{k}", v) for k, v in sd.items())  # MoCo key encoder
  state["queue"] = torch.zeros(256, 65536)
  state["queue_ptr"] = torch.zeros(1, dtype=torch.int64)
  ckpt = {
    "state_dict": state,
    "epoch": 3,
    "global_step": 1234,
    "pytorch-lightning_version": "2.5.0",
  }
  with caplog.at_level(logging.INFO):
    loaded = from_torch_state_dict(ckpt, size="small")
  _assert_params_identical(params, loaded)
  assert any(f"Ignoring {2 * 257 + 3} non-backbone" in r.message for r in caplog.records)


def test_bn_entries_optional_but_non_initial_values_warn(caplog):
  params = _random_params("small", seed=8)
  sd = to_torch_state_dict(params, size="small")
  without_bn = {k: v for k, v in sd.items() if ".bn" not in k and "first_bn" not in k}
  assert len(without_bn) == 102
  with caplog.at_level(logging.WARNING):
    _assert_params_identical(params, from_torch_state_dict(without_bn, size="small"))
  assert not caplog.records
  sd["stage_list.1.block_list.0.bn2.running_var"] = torch.full((32,), 2.0)
  with caplog.at_level(logging.WARNING):
    _assert_params_identical(params, from_torch_state_dict(sd, size="small"))
  assert any(
    "stage_list.1.block_list.0.bn2.running_var" in r.message and r.levelno == logging.WARNING
    for r in caplog.records
  )


def test_other_dtypes_load_as_float32():
  params = _random_params("small", seed=9)
  sd = to_torch_state_dict(params, size="small")
  for dtype, tol in ((torch.float64, 0), (torch.bfloat16, 2**-8)):
    cast = {k: v.to(dtype) if v.is_floating_point() else v for k, v in sd.items()}
    loaded = _flat(from_torch_state_dict(cast, size="small"))
    for path, a in _flat(params).items():
      assert loaded[path].dtype == np.float32
      np.testing.assert_allclose(loaded[path], a, rtol=tol, atol=0)
  numpy_sd = {k: v.numpy() for k, v in sd.items()}  # numpy values work without torch
  _assert_params_identical(params, from_torch_state_dict(numpy_sd, size="small"))


def test_ecgfounder_checkpoint_with_head(tmp_path, caplog):
  # ECGFounder: CLEF-medium's architecture, 12 leads, 150-way `dense`, under "state_dict" with
  # bare keys; here additionally DataParallel's "module." prefix.
  params, apply, _ = _jax_and_twin("medium", 12, 150)
  sd = to_torch_state_dict(params, size="medium", in_channels=12)
  assert list(sd)[-2:] == ["dense.weight", "dense.bias"]
  path = tmp_path / "12_lead_ECGFounder.pth"
  torch.save(
    {
      "state_dict": collections.OrderedDict((f"module.{k}", v) for k, v in sd.items()),
      "optimizer": {},
    },
    path,
  )
  loaded = load_torch(path, size="medium", in_channels=12, num_classes=150)
  _assert_params_identical(params, loaded)
  err = _compare("medium", 12, 1000, num_classes=150)
  print(f"parity ECGFounder medium C=12 head=150 L=1000: {err:.2e}")
  assert err <= 1e-5

  with caplog.at_level(logging.INFO):
    backbone = load_torch(path, size="medium", in_channels=12)
  assert "dense" not in backbone and any("head" in r.message for r in caplog.records)
  _assert_params_identical({k: v for k, v in params.items() if k != "dense"}, backbone)

  no_head = {k: v for k, v in sd.items() if not k.startswith("dense.")}
  with pytest.raises(ValueError, match="dense.weight, dense.bias"):
    from_torch_state_dict(no_head, size="medium", in_channels=12, num_classes=150)


# ---------------------------------------------------------------------------------------------
# Import isolation.
# ---------------------------------------------------------------------------------------------


def _run_isolated(code):
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  proc = subprocess.run(
    [sys.executable, "-c", code],
    cwd=REPO_ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 0, proc.stderr


def test_twin_imports_without_jax():
  _run_isolated(
    "import sys; sys.modules['jax'] = None; sys.modules['flax'] = None\n"
    "from clef_jax.export import TorchNet1D\n"
    "import torch\n"
    "assert TorchNet1D('small')(torch.zeros(1, 1, 100)).shape == (1, 256)\n"
  )


def test_jax_side_imports_without_torch():
  _run_isolated(
    "import sys; sys.modules['torch'] = None\n"
    "import numpy as np\n"
    "import clef_jax.export as ex, clef_jax.models\n"
    "sd = {e.torch_key: np.zeros(e.torch_shape, np.float32)\n"
    "      for e in ex.state_dict_table('small') if e.rule != 'bn'}\n"
    "p = ex.from_torch_state_dict(sd, size='small')\n"
    "assert p['stem_conv']['kernel'].shape == (16, 1, 32)\n"
    "try:\n"
    "  ex.to_torch_state_dict(p, size='small')\n"
    "  raise SystemExit('expected ImportError')\n"
    "except ImportError as e:\n"
    "  assert 'PyTorch' in str(e)\n"
  )
