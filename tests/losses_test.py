"""Tests for clef_jax.losses against docs/method.md §C.8, a float64 numpy re-derivation and a torch twin."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from clef_jax import losses

try:
  import torch
  import torch.nn.functional as F
except ImportError:  # pragma: no cover
  torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="torch not installed")

RTOL = 1e-5

# Jitted entry points (one compile per shape/switch set keeps the suite fast; the spec vectors
# below also run eagerly).
_STATIC = (
  "use_mask",
  "nan_rate_meta",
  "missing_risk",
  "weight_normalization",
  "minmax_include_diagonal",
  "combine",
)
clef = jax.jit(losses.clef_loss, static_argnames=_STATIC)
nce = jax.jit(losses.info_nce, static_argnames=("reduction",))


pytestmark = pytest.mark.usefixtures("fast_compiles_module")


@functools.partial(jax.jit, static_argnames=_STATIC)
def clef_vg(z, risk, rate_meta=None, **kw):
  """((total, extras), d total / d z)."""
  fn = lambda x: losses.clef_loss(x, risk, rate_meta=rate_meta, **kw)
  return jax.value_and_grad(fn, has_aux=True)(z)


# ------------------------------------------------------------------------------------------------
# Independent references.
# ------------------------------------------------------------------------------------------------
def np_cos(z):
  z = np.asarray(z, np.float64)
  n = np.linalg.norm(z, axis=1, keepdims=True)
  u = z / np.maximum(n, 1e-12)
  return u @ u.T


def np_info_nce(z, tau=0.07):
  """Row by row: -log softmax over b != a, evaluated at the positive."""
  s = np_cos(z) / tau
  n = s.shape[0]
  b = n // 2
  out = []
  for a in range(n):
    others = [c for c in range(n) if c != a]
    row = s[a, others]
    lse = row.max() + np.log(np.sum(np.exp(row - row.max())))
    out.append(lse - s[a, (a + b) % n])
  return float(np.mean(out))


def np_dissimilarity(risk, q=None, alpha=0.2, missing="zero", nan_q="propagate"):
  """Returns subject-level W, T = 1 - W and the pair-validity mask, float64, by explicit loops."""
  risk = np.asarray(risk, np.float64)
  bsz = len(risk)
  ok = np.isfinite(risk)
  r = np.where(ok, risk, 0.0)
  delta = np.array([[(r[i] - r[k]) ** 2 for k in range(bsz)] for i in range(bsz)])
  valid = np.ones((bsz, bsz), bool) if missing == "zero" else np.outer(ok, ok)
  if valid.any():
    lo, hi = delta[valid].min(), delta[valid].max()
  else:
    lo = hi = 0.0
  d = (1 - alpha) * (delta - lo) / (hi - lo + 1e-6) + alpha
  if missing == "exclude":
    off = valid & ~np.eye(bsz, dtype=bool)
    neutral = d[off].mean() if off.any() else (1 + alpha) / 2
    d = np.where(valid, d, neutral)
  np.fill_diagonal(d, 0.0)
  if q is not None:
    q = np.asarray(q, np.float64)
    if nan_q == "zero":
      q = np.nan_to_num(q, nan=0.0)
    d = d * np.exp(-np.outer(q, q))
  return d, 1.0 - d, valid | np.eye(bsz, dtype=bool)


def np_weighted_nce(z, w_sub, tau=0.07, norm="row_softmax"):
  s = np_cos(z) / tau
  n = s.shape[0]
  b = n // 2
  w = np.tile(w_sub, (2, 2))
  out = []
  for a in range(n):
    if norm == "row_softmax":
      om = np.exp(w[a]) / np.exp(w[a]).sum()
    else:
      om = w[a]
    m = max(s[a, c] for c in range(n) if c != a)
    p = (a + b) % n
    e_pos = np.exp(s[a, p] - m)
    neg = sum(om[c] * np.exp(s[a, c] - m) for c in range(n) if c not in (a, p))
    out.append(-np.log(e_pos / (e_pos + neg + 1e-8)))
  return float(np.mean(out))


def np_alignment(z, t_sub, diag=True, valid_sub=None):
  s = np_cos(z)
  n = s.shape[0]
  t = np.tile(t_sub, (2, 2))
  keep = np.ones((n, n), bool) if valid_sub is None else np.tile(valid_sub, (2, 2))
  stats = np.ones((n, n), bool)
  if not diag:
    stats = ~np.eye(n, dtype=bool)
    keep = keep & stats
  lo, hi = s[stats].min(), s[stats].max()
  sh = (s - lo) / (hi - lo + 1e-6)
  return float(np.mean((sh - t)[keep] ** 2))


def np_clef(
  z,
  risk,
  q=None,
  *,
  alpha=0.2,
  tau=0.07,
  missing="zero",
  nan_q="propagate",
  norm="row_softmax",
  diag=True,
  combine="mean",
):
  w, t, valid = np_dissimilarity(risk, q, alpha, missing, nan_q)
  lw = np_weighted_nce(z, w, tau, norm)
  ld = np_alignment(z, t, diag, valid if missing == "exclude" else None)
  tot = lw + ld
  return (tot / 2 if combine == "mean" else tot), lw, ld


def torch_official(z, metadata, tau=0.07, temp=0.2):
  """A torch port, from docs/method.md's description, of the official `_get_metadata_similarity`,
  `_meta_nce_loss` and `_similarity_alignment_loss` (float64 metadata, float32 features)."""
  z = torch.as_tensor(np.asarray(z), dtype=torch.float32).requires_grad_(True)
  metadata = torch.as_tensor(np.asarray(metadata), dtype=torch.float64)
  n = z.shape[0]
  bsz = n // 2
  if metadata.dim() == 2:
    mask, risk = metadata[:, 0], metadata[:, 1]
  else:
    mask, risk = None, metadata
  risk = torch.nan_to_num(risk, nan=0.0, posinf=0.0, neginf=0.0)
  diff = (risk.unsqueeze(1) - risk.unsqueeze(0)) ** 2
  diff = (diff - diff.min()) / (diff.max() - diff.min() + 1e-6)
  dist = (1 - temp) * diff + temp
  dist.fill_diagonal_(0)
  if mask is not None:
    dist = dist * torch.exp(-mask.unsqueeze(1) * mask.unsqueeze(0))
  w = torch.zeros(n, n, dtype=torch.float32)
  w[:, :] = dist.repeat(2, 2)
  meta_sim = 1 - w

  feats = F.normalize(z, dim=1)
  sim = feats @ feats.T
  labels = torch.cat([torch.arange(bsz)] * 2)
  labels = (labels.unsqueeze(0) == labels.unsqueeze(1)).float()
  eye = torch.eye(n, dtype=torch.bool)
  weights = torch.softmax(w, dim=1)[~eye].view(n, -1)
  labels = labels[~eye].view(n, -1)
  s = sim[~eye].view(n, -1) / tau
  s = s - s.max(dim=1, keepdim=True).values.detach()
  e = torch.exp(s)
  pos = (e * labels).sum(1)
  neg = (e * weights * (1 - labels)).sum(1)
  l_w = (-torch.log(pos / (pos + neg + 1e-8))).mean()
  sim_n = (sim - sim.min()) / (sim.max() - sim.min() + 1e-6)
  l_d = F.mse_loss(sim_n, meta_sim)
  total = (l_w + l_d) / 2
  total.backward()
  return float(total.detach()), float(l_w.detach()), float(l_d.detach()), z.grad.numpy()


def torch_nt_xent(z, tau=0.07):
  """sthalles-SimCLR style: logits [positive | negatives], CE label 0."""
  z = torch.as_tensor(np.asarray(z), dtype=torch.float32)
  n = z.shape[0]
  labels = torch.cat([torch.arange(n // 2)] * 2)
  labels = (labels.unsqueeze(0) == labels.unsqueeze(1)).float()
  feats = F.normalize(z, dim=1)
  sim = feats @ feats.T
  eye = torch.eye(n, dtype=torch.bool)
  labels = labels[~eye].view(n, -1)
  sim = sim[~eye].view(n, -1)
  pos = sim[labels.bool()].view(n, -1)
  negs = sim[~labels.bool()].view(n, -1)
  logits = torch.cat([pos, negs], dim=1) / tau
  return float(F.cross_entropy(logits, torch.zeros(n, dtype=torch.long)))


# ------------------------------------------------------------------------------------------------
# Fixtures.
# ------------------------------------------------------------------------------------------------
def spec_inputs():
  i = np.arange(8)[:, None]
  j = np.arange(5)[None, :]
  z = (np.sin(0.7 * i + 0.3 * j) + 0.05 * i * np.cos(1.3 * j)).astype(np.float32)
  return z, np.array([2.0, 5.5, 10.0, np.nan]), np.array([1.0, 0.8, 0.5, 0.0])


def random_inputs(bsz, dim=16, seed=0, missing=0.2):
  rng = np.random.default_rng(seed + bsz)
  z = rng.normal(size=(2 * bsz, dim)).astype(np.float32)
  z[bsz:] = z[:bsz] + 1.5 * rng.normal(size=(bsz, dim))  # correlated views
  risk = rng.uniform(0.5, 30.0, size=bsz)
  risk[rng.random(bsz) < missing] = np.nan
  q = rng.uniform(0, 1, size=bsz)
  return z, risk, q


def rel(a, b):
  return abs(float(a) - float(b)) / max(abs(float(b)), 1e-30)


# ------------------------------------------------------------------------------------------------
# docs/method.md §C.8.
# ------------------------------------------------------------------------------------------------
SPEC_T_NOMASK = np.array(
  [
    [1, 0.70200000098, 0.28800000512, 0.76800000032],
    [0.70200000098, 1, 0.63800000162, 0.55800000242],
    [0.28800000512, 0.63800000162, 1, 8.0e-09],
    [0.76800000032, 0.55800000242, 8.0e-09, 1],
  ]
)
SPEC_T_MASK = np.array(
  [
    [1, 0.8660999691, 0.5681501734, 0.768],
    [0.8660999691, 1, 0.7573441444, 0.558],
    [0.5681501734, 0.7573441444, 1, 8e-09],
    [0.768, 0.558, 8e-09, 1],
  ]
)


def test_spec_info_nce():
  z, _, _ = spec_inputs()
  assert rel(losses.info_nce(jnp.asarray(z)), 25.43075180053711) < RTOL


@pytest.mark.parametrize("mask", [False, True])
def test_spec_meta_similarity(mask):
  _, risk, q = spec_inputs()
  _, extras = losses.risk_dissimilarity(risk, rate_meta=q if mask else None)
  expected = SPEC_T_MASK if mask else SPEC_T_NOMASK
  # Relative 1e-5 on every entry, the 8e-9 ones included (printed to fewer digits for the mask).
  np.testing.assert_allclose(np.asarray(extras["meta_similarity"]), expected, rtol=2e-5, atol=0)


@pytest.mark.parametrize(
  "mask,lw,ld,total",
  [
    (False, 23.4880313873291, 0.2699684500694275, 11.878999710083008),
    (True, 23.473800659179688, 0.2807515859603882, 11.877276420593262),
  ],
)
def test_spec_clef_loss(mask, lw, ld, total):
  z, risk, q = spec_inputs()
  tot, ex = losses.clef_loss(jnp.asarray(z), risk, rate_meta=q, use_mask=mask)
  assert rel(ex["weighted_nce"], lw) < RTOL
  assert rel(ex["alignment"], ld) < RTOL
  assert rel(tot, total) < RTOL


# ------------------------------------------------------------------------------------------------
# Random inputs vs numpy (float64) and torch.
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bsz", [1, 2, 8, 64])
def test_info_nce_matches_numpy(bsz):
  z, _, _ = random_inputs(bsz)
  np.testing.assert_allclose(float(nce(jnp.asarray(z))), np_info_nce(z), rtol=RTOL, atol=1e-6)


@needs_torch
@pytest.mark.parametrize("bsz", [2, 8])
def test_info_nce_matches_torch(bsz):
  z, _, _ = random_inputs(bsz)
  assert rel(nce(jnp.asarray(z)), torch_nt_xent(z)) < RTOL


@pytest.mark.parametrize("bsz", [1, 2, 8, 64])
@pytest.mark.parametrize("mask", [False, True])
def test_clef_loss_matches_numpy(bsz, mask):
  z, risk, q = random_inputs(bsz)
  tot, ex = clef(jnp.asarray(z), risk, rate_meta=q, use_mask=mask)
  ref_tot, ref_lw, ref_ld = np_clef(z, risk, q if mask else None)
  np.testing.assert_allclose(float(ex["weighted_nce"]), ref_lw, rtol=RTOL, atol=1e-6)
  np.testing.assert_allclose(float(ex["alignment"]), ref_ld, rtol=RTOL, atol=1e-7)
  np.testing.assert_allclose(float(tot), ref_tot, rtol=RTOL, atol=1e-6)


def test_batch_of_one():
  """B = 1 is allowed (the official last batch can be that small): no negatives, so L^w ~ 0
  (log(1 + 1e-8 / E_pos)) and the info-NCE is exactly 0; L^d is defined (all targets are 1)."""
  z, risk, _ = random_inputs(1)
  assert float(nce(jnp.asarray(z))) == 0.0
  tot, ex = clef(jnp.asarray(z), risk)
  assert abs(float(ex["weighted_nce"])) < 1e-6
  # S^ = [[1, 0], [0, 1]] (up to 1e-6) against an all-ones target: L^d = 0.5.
  np.testing.assert_allclose(float(ex["alignment"]), 0.5, rtol=1e-5)
  _, g = clef_vg(jnp.asarray(z), risk)
  assert np.all(np.isfinite(np.asarray(g)))


@needs_torch
@pytest.mark.parametrize("bsz,mask", [(2, False), (8, False), (8, True), (64, False)])
def test_clef_loss_and_grad_match_torch(bsz, mask):
  z, risk, q = random_inputs(bsz)
  meta = np.stack([q, risk], 1) if mask else risk
  t_tot, t_lw, t_ld, t_grad = torch_official(z, meta)
  (tot, ex), grad = clef_vg(jnp.asarray(z), risk, rate_meta=q, use_mask=mask)
  assert rel(ex["weighted_nce"], t_lw) < RTOL
  assert rel(ex["alignment"], t_ld) < RTOL
  assert rel(tot, t_tot) < RTOL
  np.testing.assert_allclose(np.asarray(grad), t_grad, rtol=1e-4, atol=1e-6)


@needs_torch
def test_spec_vector_matches_torch_twin():
  z, risk, q = spec_inputs()
  assert rel(torch_official(z, risk)[0], 11.878999710083008) < RTOL
  assert rel(torch_official(z, np.stack([q, risk], 1))[0], 11.877276420593262) < RTOL


# ------------------------------------------------------------------------------------------------
# Switches: each changes the result exactly as documented (checked against numpy).
# ------------------------------------------------------------------------------------------------
SWITCHES = {
  "combine": ("sum", {"combine": "sum"}),
  "weight_normalization": ("multiply", {"norm": "multiply"}),
  "missing_risk": ("exclude", {"missing": "exclude"}),
  "minmax_include_diagonal": (False, {"diag": False}),
}


@pytest.mark.parametrize("name", sorted(SWITCHES))
@pytest.mark.parametrize("bsz", [2, 8])
def test_switch_matches_numpy_and_changes_result(name, bsz):
  z, risk, _ = random_inputs(bsz, missing=0.0)
  risk[0] = np.nan  # at least one missing risk so "exclude" matters
  value, np_kw = SWITCHES[name]
  default, _ = clef(jnp.asarray(z), risk)
  switched, _ = clef(jnp.asarray(z), risk, **{name: value})
  ref = np_clef(z, risk, **np_kw)[0]
  np.testing.assert_allclose(float(switched), ref, rtol=RTOL)
  assert abs(float(switched) - float(default)) > 1e-4 * abs(float(default))


def test_combine_sum_is_twice_mean():
  z, risk, _ = random_inputs(8)
  m, ex = clef(jnp.asarray(z), risk)
  s, _ = clef(jnp.asarray(z), risk, combine="sum")
  np.testing.assert_allclose(float(s), 2 * float(m), rtol=1e-6)
  np.testing.assert_allclose(float(s), float(ex["weighted_nce"] + ex["alignment"]), rtol=1e-6)


def test_all_switches_jointly_match_numpy():
  z, risk, q = random_inputs(8, missing=0.3)
  q[1] = np.nan
  # A pairwise-covering half of the 2^3 grid (every pair of settings appears once).
  for norm, missing, diag in (
    ("row_softmax", "zero", True),
    ("row_softmax", "exclude", False),
    ("multiply", "zero", False),
    ("multiply", "exclude", True),
  ):
    tot, _ = clef(
      jnp.asarray(z),
      risk,
      rate_meta=q,
      use_mask=True,
      nan_rate_meta="zero",
      weight_normalization=norm,
      missing_risk=missing,
      minmax_include_diagonal=diag,
    )
    ref = np_clef(z, risk, q, nan_q="zero", norm=norm, missing=missing, diag=diag)[0]
    np.testing.assert_allclose(float(tot), ref, rtol=RTOL)


def test_nan_rate_meta():
  """Official: a NaN rate_meta propagates to the loss; "zero" treats it as q = 0 (M = 1)."""
  z, risk, q = random_inputs(4, missing=0.0)
  q[2] = np.nan
  tot, _ = clef(jnp.asarray(z), risk, rate_meta=q, use_mask=True)
  assert np.isnan(float(tot))
  fixed, _ = clef(jnp.asarray(z), risk, rate_meta=q, use_mask=True, nan_rate_meta="zero")
  q0 = np.nan_to_num(q)
  same, _ = clef(jnp.asarray(z), risk, rate_meta=q0, use_mask=True)
  assert np.isfinite(float(fixed)) and float(fixed) == pytest.approx(float(same), rel=1e-7)
  # rate_meta is ignored unless use_mask.
  off, _ = clef(jnp.asarray(z), risk, rate_meta=q)
  assert np.isfinite(float(off))
  with pytest.raises(ValueError, match="rate_meta"):
    clef(jnp.asarray(z), risk, use_mask=True)


def test_missing_risk_exclude_semantics():
  """With "exclude", a missing subject's pairs get the batch-mean dissimilarity, the min-max sees
  only valid pairs, and without missing risks it equals the official loss."""
  _, risk, _ = spec_inputs()
  w, ex = losses.risk_dissimilarity(risk, missing_risk="exclude")
  w = np.asarray(w)
  # Valid pairs: Delta over {2, 5.5, 10}; max 64.
  d01 = 0.8 * 12.25 / (64 + 1e-6) + 0.2
  d02 = 0.8 * 64 / (64 + 1e-6) + 0.2
  d12 = 0.8 * 20.25 / (64 + 1e-6) + 0.2
  neutral = (d01 + d02 + d12) / 3
  np.testing.assert_allclose(w[0, 1], d01, rtol=1e-6)
  np.testing.assert_allclose(w[:3, 3], neutral, rtol=1e-6)
  np.testing.assert_allclose(np.diag(w), 0.0)
  assert not np.asarray(ex["pair_valid"])[0, 3] and np.asarray(ex["pair_valid"])[3, 3]
  z, full, _ = random_inputs(8, missing=0.0)
  a, _ = clef(jnp.asarray(z), full)
  b, _ = clef(jnp.asarray(z), full, missing_risk="exclude")
  np.testing.assert_allclose(float(a), float(b), rtol=1e-6)


def test_risk_scale_cancels():
  z, risk, _ = random_inputs(8, missing=0.0)
  a, _ = clef(jnp.asarray(z), risk)
  b, _ = clef(jnp.asarray(z), risk / 100.0)
  np.testing.assert_allclose(float(a), float(b), rtol=1e-4)


def test_invalid_choices_raise():
  z, risk, _ = random_inputs(2)
  for kw in ({"combine": "avg"}, {"missing_risk": "drop"}, {"weight_normalization": "x"}):
    with pytest.raises(ValueError):
      clef(jnp.asarray(z), risk, **kw)
  with pytest.raises(ValueError):
    nce(jnp.ones((3, 4)))


# ------------------------------------------------------------------------------------------------
# Degenerate inputs: values and gradients finite.
# ------------------------------------------------------------------------------------------------
def _degenerate_cases():
  rng = np.random.default_rng(7)
  z = rng.normal(size=(16, 8)).astype(np.float32)
  dup = np.tile(rng.normal(size=(1, 8)), (16, 1)).astype(np.float32)
  return {
    "equal_risks": (z, np.full(8, 3.0)),
    "all_missing": (z, np.full(8, np.nan)),
    "duplicates": (dup, np.full(8, 4.2)),
    "zero_embeddings": (np.zeros((16, 8), np.float32), rng.uniform(1, 9, 8)),
    "zero_rows_mixed": (np.concatenate([z[:4] * 0, z[4:]]), rng.uniform(1, 9, 8)),
  }


@pytest.mark.parametrize("case", sorted(_degenerate_cases()))
@pytest.mark.parametrize(
  "kw",
  [
    {},
    {"missing_risk": "exclude"},
    {"weight_normalization": "multiply", "minmax_include_diagonal": False},
  ],
)
def test_degenerate_inputs_finite(case, kw):
  z, risk = _degenerate_cases()[case]
  (tot, ex), g = clef_vg(jnp.asarray(z), risk, **kw)
  assert np.isfinite(float(tot)), (case, kw)
  assert np.all(np.isfinite(np.asarray(g))), (case, kw)
  ref = np_clef(
    z,
    risk,
    missing=kw.get("missing_risk", "zero"),
    norm=kw.get("weight_normalization", "row_softmax"),
    diag=kw.get("minmax_include_diagonal", True),
  )[0]
  np.testing.assert_allclose(float(tot), ref, rtol=RTOL)
  g_nce = jax.jit(jax.grad(losses.info_nce))(jnp.asarray(z))
  assert np.all(np.isfinite(np.asarray(g_nce)))


def test_equal_and_missing_risks_give_uniform_weights():
  """Max Delta = 0 -> every off-diagonal D = alpha; all-missing with "zero" is the same."""
  for risk in (np.full(4, 3.0), np.full(4, np.nan)):
    w, _ = losses.risk_dissimilarity(risk)
    np.testing.assert_allclose(np.asarray(w), 0.2 * (1 - np.eye(4)), atol=1e-7)


def test_l2_normalize_zero_rows():
  x = jnp.zeros((2, 3))
  np.testing.assert_array_equal(np.asarray(losses.l2_normalize(x)), 0.0)
  g = jax.grad(lambda v: jnp.sum(losses.l2_normalize(v) * jnp.arange(3.0)))(x)
  assert np.all(np.isfinite(np.asarray(g)))
  y = jnp.asarray([[3.0, 4.0, 0.0]])
  np.testing.assert_allclose(np.asarray(losses.l2_normalize(y)), [[0.6, 0.8, 0.0]], rtol=1e-6)


# ------------------------------------------------------------------------------------------------
# jit, grad, dtypes, sharding.
# ------------------------------------------------------------------------------------------------
def test_grad_matches_finite_differences():
  z, risk, _ = random_inputs(4, dim=6)
  g = np.asarray(clef_vg(jnp.asarray(z), risk)[1])
  f64 = lambda x: np_clef(x, risk)[0]
  h = 1e-4
  for idx in [(0, 0), (3, 2), (7, 5)]:
    zp, zm = z.astype(np.float64), z.astype(np.float64)
    zp = zp.copy()
    zp[idx] += h
    zm = zm.copy()
    zm[idx] -= h
    np.testing.assert_allclose(g[idx], (f64(zp) - f64(zm)) / (2 * h), rtol=2e-3, atol=2e-4)


def test_bfloat16_input_computed_in_float32():
  z, risk, _ = random_inputs(8)
  tot, _ = clef(jnp.asarray(z, jnp.bfloat16), risk)
  assert tot.dtype == jnp.float32
  ref = np_clef(np.asarray(jnp.asarray(z, jnp.bfloat16).astype(jnp.float32)), risk)[0]
  np.testing.assert_allclose(float(tot), ref, rtol=RTOL)


def test_jit_on_sharded_global_batch():
  devices = np.array(jax.devices())
  mesh = Mesh(devices, ("data",))
  bsz = 4 * len(devices)
  z, risk, q = random_inputs(bsz)
  zs = jax.device_put(jnp.asarray(z), NamedSharding(mesh, P("data", None)))
  rs = jax.device_put(jnp.asarray(risk, jnp.float32), NamedSharding(mesh, P("data")))
  qs = jax.device_put(jnp.asarray(q, jnp.float32), NamedSharding(mesh, P("data")))

  @jax.jit
  def step(z, r, q):
    fn = lambda x: clef(x, r, rate_meta=q, use_mask=True)
    (tot, ex), g = jax.value_and_grad(fn, has_aux=True)(z)
    return tot, ex, g, losses.info_nce(z)

  tot, ex, g, nce = step(zs, rs, qs)
  assert g.sharding.is_equivalent_to(zs.sharding, 2) or g.shape == z.shape
  ref = np_clef(z, risk, q)[0]
  np.testing.assert_allclose(float(tot), ref, rtol=RTOL)
  np.testing.assert_allclose(float(nce), np_info_nce(z), rtol=RTOL)
  g_ref = clef_vg(jnp.asarray(z), risk, rate_meta=q, use_mask=True)[1]
  np.testing.assert_allclose(np.asarray(g), np.asarray(g_ref), rtol=1e-4, atol=1e-7)


def test_reduction_none():
  z, risk, _ = random_inputs(8)
  per_row = nce(jnp.asarray(z), reduction="none")
  assert per_row.shape == (16,)
  np.testing.assert_allclose(float(per_row.mean()), np_info_nce(z), rtol=RTOL)
  w, _ = jax.jit(losses.risk_dissimilarity)(risk)
  rows = jax.jit(losses.weighted_info_nce, static_argnames="reduction")(
    jnp.asarray(z), w, reduction="none"
  )
  np.testing.assert_allclose(
    float(rows.mean()), np_weighted_nce(z, np_dissimilarity(risk)[0]), rtol=RTOL
  )


def test_building_blocks_accept_row_level_matrices():
  z, risk, _ = random_inputs(4)
  w, ex = losses.risk_dissimilarity(risk)
  a = losses.weighted_info_nce(jnp.asarray(z), w)
  b = losses.weighted_info_nce(jnp.asarray(z), jnp.tile(w, (2, 2)))
  c = losses.similarity_alignment_loss(jnp.asarray(z), ex["meta_similarity"])
  d = losses.similarity_alignment_loss(jnp.asarray(z), jnp.tile(ex["meta_similarity"], (2, 2)))
  assert float(a) == pytest.approx(float(b), rel=1e-7)
  assert float(c) == pytest.approx(float(d), rel=1e-7)
  with pytest.raises(ValueError):
    losses.weighted_info_nce(jnp.asarray(z), jnp.ones((3, 3)))


# ------------------------------------------------------------------------------------------------
# MoCo and BYOL.
# ------------------------------------------------------------------------------------------------
def test_moco_loss_matches_numpy():
  rng = np.random.default_rng(3)
  q, k = rng.normal(size=(6, 8)), rng.normal(size=(6, 8))
  queue = rng.normal(size=(8, 32))
  queue /= np.linalg.norm(queue, axis=0, keepdims=True)
  moco = jax.jit(losses.moco_loss, static_argnames="temperature")
  out = moco(
    jnp.asarray(q, jnp.float32),
    jnp.asarray(k, jnp.float32),
    jnp.asarray(queue, jnp.float32),
    temperature=0.2,
  )
  qn = q / np.linalg.norm(q, axis=1, keepdims=True)
  kn = k / np.linalg.norm(k, axis=1, keepdims=True)
  ref = []
  for i in range(6):
    logits = np.concatenate([[qn[i] @ kn[i]], qn[i] @ queue]) / 0.2
    ref.append(np.log(np.sum(np.exp(logits))) - logits[0])
  np.testing.assert_allclose(float(out), np.mean(ref), rtol=RTOL)
  gk = jax.jit(jax.grad(lambda kk: losses.moco_loss(jnp.asarray(q), kk, jnp.asarray(queue))))(
    jnp.asarray(k, jnp.float32)
  )
  np.testing.assert_array_equal(np.asarray(gk), 0.0)  # keys carry no gradient


def test_byol_loss_matches_numpy():
  rng = np.random.default_rng(4)
  p1, z2, p2, z1 = (rng.normal(size=(5, 7)) for _ in range(4))
  cos = lambda a, b: np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
  ref = np.mean(2 - 2 * cos(p1, z2) + 2 - 2 * cos(p2, z1))
  out = jax.jit(losses.byol_loss)(*(jnp.asarray(x, jnp.float32) for x in (p1, z2, p2, z1)))
  np.testing.assert_allclose(float(out), ref, rtol=RTOL)
  same = jnp.asarray(p1, jnp.float32)
  assert abs(float(losses.byol_loss(same, 3 * same, same, same))) < 1e-5
  g = jax.grad(lambda t: losses.byol_loss(same, t, same, t))(jnp.asarray(z2, jnp.float32))
  np.testing.assert_array_equal(np.asarray(g), 0.0)  # targets carry no gradient


def test_loss_benchmark_smoke(capsys):
  from clef_jax.bench import loss as bench_loss

  rows = bench_loss.run(["--max-batch", "64", "--repeats", "1", "--dim", "8"])
  assert [(r["loss"], r["batch"], r["n"]) for r in rows] == [
    ("info_nce", 64, 128),
    ("clef_loss", 64, 128),
  ]
  assert all(r["time_ms"] > 0 for r in rows)
  assert "clef_loss" in capsys.readouterr().out
  # 4 buffers of (2B)^2 float32 at B = 16384: 4 * 4 * 32768^2 = 16 GiB exactly.
  assert bench_loss.largest_batch(4.0) == 16384
  assert bench_loss.largest_batch(4.0001) == 16383
