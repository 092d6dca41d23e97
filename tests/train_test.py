"""Train step: 8 simulated devices == 1 device, method semantics, metrics, fsdp == replicate.

Every step function is compiled once per (method, mesh, strategy) and cached: XLA compile time of
the Net1D gradient dominates these CPU tests, so they train a two-stage Net1D (the same block,
stride-2 and stride-1 convs, SE and padded shortcut as the named sizes, a third of Net1D-small's
blocks). Backbone weights come from numpy (a Net1D random init compiles one threefry hash per
parameter, which alone takes tens of seconds on CPU).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from clef_jax import losses, methods, optim, sharding, step_metrics, train
from clef_jax.models import net1d

B, L = 8, 256  # global batch (subjects) and window length
QUEUE = 4 * B  # MoCo K for tests (K % B == 0)
RTOL = 1e-5  # relative difference (global norms), 8 devices vs 1
MODEL = net1d.Net1D(
  size=net1d.Net1DVariant(
    base_filters=32, ratio=0.5, filter_list=(32, 64), m_blocks_list=(1, 2), groups_width=8
  )
)
TX, LR_FN = optim.make_optimizer(steps_per_epoch=2)
STEPS = 2


pytestmark = pytest.mark.usefixtures("fast_compiles_module")


@functools.cache
def _backbone_params():
  """PyTorch-like uniform(+-1/sqrt(fan_in)) weights from numpy, in the model's param tree."""
  shapes = jax.eval_shape(MODEL.init, jax.random.key(0), jnp.zeros((1, L, 1)))["params"]
  rng = np.random.default_rng(0)

  def init(x):
    fan_in = int(np.prod(x.shape[:-1])) if len(x.shape) > 1 else 64
    bound = 1.0 / np.sqrt(fan_in)
    return rng.uniform(-bound, bound, x.shape).astype(np.float32)

  return jax.tree.map(init, shapes)


@functools.cache
def _batch():
  rng = np.random.default_rng(1)
  base = rng.standard_normal((B, 1, L, 1)).astype(np.float32)
  # Two noisy views of one signal per subject, so the positives are genuinely similar.
  views = base + 0.3 * rng.standard_normal((B, 2, L, 1)).astype(np.float32)
  risk = rng.uniform(1.0, 20.0, B).astype(np.float32)
  risk[3] = np.nan
  rate_meta = rng.uniform(0.0, 1.0, B).astype(np.float32)
  return {"views": views, "risk": risk, "rate_meta": rate_meta}


@functools.cache
def _moco_queue():
  """Queue of keys the test batch's queries can confuse (seeds the MoCo state on both meshes).

  With the default random-normal queue the loss saturates at step 1: the positive key
  (cos ~ 1 at a random init) beats K random negatives (cos ~ 0) by 1/tau = 14 logits, the loss is
  ~K e^-14 and its gradient is a 1e-7-sized difference of O(1) terms, where float32 reduction
  order alone changes it by 1e-4 (relative). Keys of other views of the same signals (as the
  queue holds after a few steps) keep the loss near log(K + 1) and the comparison well-posed.
  """
  views = _batch()["views"]
  rng = np.random.default_rng(2)
  x = np.concatenate(
    [
      views[:, 1] + 0.3 * rng.standard_normal(views[:, 1].shape, np.float32)
      for _ in range(QUEUE // B)
    ]
  )  # (K, L, 1)
  emb, _ = jax.jit(MODEL.apply)({"params": _backbone_params()}, jnp.asarray(x))
  emb = np.asarray(emb, np.float64)
  return (emb / np.linalg.norm(emb, axis=1, keepdims=True)).T.astype(np.float32)  # (D, K)


@functools.cache
def _compiled(method, num_devices, strategy="replicate"):
  """(mesh, fresh-state factory, jitted step, state sharding) on a `num_devices` mesh."""
  mesh = sharding.make_mesh(num_devices)
  state, state_sharding = train.create_sharded_train_state(
    jax.random.key(0),
    mesh=mesh,
    strategy=strategy,
    fsdp_min_size=1024,
    model=MODEL,
    tx=TX,
    method=method,
    init_shape=(1, L, 1),
    backbone_params=_backbone_params(),
    moco_queue_size=QUEUE,
  )
  host_state = jax.device_get(state)
  if method == "moco":
    host_state = host_state.replace(queue=_moco_queue())
  step = train.jit_train_step(
    train.make_train_step(MODEL, TX, LR_FN, method=method, mesh=mesh),
    mesh=mesh,
    state_sharding=state_sharding,
  )

  def new_state():
    return jax.device_put(host_state, state_sharding)

  return mesh, new_state, step, state_sharding


@functools.cache
def _run(method, num_devices, strategy="replicate", steps=STEPS):
  """Host copies of the states (initial + after each step) and the per-step metrics."""
  mesh, new_state, step, _ = _compiled(method, num_devices, strategy)
  state = new_state()
  batch = sharding.shard_batch(_batch(), mesh)
  states, metrics = [jax.device_get(state)], []
  for _ in range(steps):
    state, m = step(state, batch, jax.random.key(42))
    states.append(jax.device_get(state))  # before the next call donates `state`
    metrics.append(jax.device_get(m))
  return states, metrics


def _max_rel(a, b):
  """Largest per-leaf max|a - b| / max|b| over two pytrees of equal structure."""

  def rel(x, y):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return float(np.max(np.abs(x - y)) / max(np.max(np.abs(y)), 1e-30)) if y.size else 0.0

  return max(jax.tree.leaves(jax.tree.map(rel, a, b)), default=0.0)


def _global_rel(a, b):
  """||a - b|| / ||b|| over all leaves of two pytrees together (float64)."""
  la = [np.asarray(x, np.float64).ravel() for x in jax.tree.leaves(a)]
  lb = [np.asarray(x, np.float64).ravel() for x in jax.tree.leaves(b)]
  num = np.sqrt(sum(np.sum((x - y) ** 2) for x, y in zip(la, lb)))
  return float(num / max(np.sqrt(sum(np.sum(y**2) for y in lb)), 1e-30))


def _without_degenerate(tree):
  """Zeros BYOL's `predictor/fc1/bias` wherever it appears (params, Adam moments).

  That bias feeds BatchNorm, which subtracts the batch mean, so its true gradient is exactly 0
  and its computed gradient is rounding noise (~1e-16) that differs with the reduction order;
  Adam then turns the noise into +-lr steps. It cannot change any output, in JAX or in torch.
  """

  def f(path, x):
    keys = [getattr(k, "key", None) for k in path]
    return np.zeros_like(x) if keys[-3:] == ["predictor", "fc1", "bias"] else x

  return jax.tree_util.tree_map_with_path(f, tree)


def _adam_mu(state):
  # After the first update Adam's mu = (1 - b1) * grads: the gradients, up to a factor 10.
  return state.opt_state[0].mu


# ------------------------------------------------------------------------------------------------
# 8 devices vs 1 device.
# ------------------------------------------------------------------------------------------------
# BYOL/MoCo 8-device compiles are the slowest part of this file (two backbones in one step).
@pytest.mark.parametrize(
  "method",
  [
    "clef",
    "simclr",
    pytest.param("byol", marks=pytest.mark.slow),
    pytest.param("moco", marks=pytest.mark.slow),
  ],
)
def test_eight_devices_match_one(method):
  """Loss, gradients, updated params and the whole state agree to 1e-5 (relative, float32).

  Relative differences are global norms over the pytree. Per element they can be larger where a
  value is near 0: a gradient of ~1e-9 (<= Adam's eps) turns a 1e-7 difference of a reordered
  cross-device sum into an update difference of ~0.1 lr; the per-element maxima are printed.
  """
  s1, m1 = _run(method, 1)
  s8, m8 = _run(method, 8)
  # Same initial state on both meshes (threefry is partitionable: init is sharding-invariant).
  assert _max_rel(s8[0], s1[0]) == 0.0
  s1, s8 = _without_degenerate(s1), _without_degenerate(s8)
  diffs = {
    "loss": _max_rel(m8[0]["loss"], m1[0]["loss"]),
    "grads": _global_rel(_adam_mu(s8[1]), _adam_mu(s1[1])),
    "params": _global_rel(s8[1].params, s1[1].params),
    "state": _global_rel(s8[1], s1[1]),  # + ema, BN stats, queue, opt state
    "loss_step2": _max_rel(m8[1]["loss"], m1[1]["loss"]),
    "params_step2": _global_rel(s8[2].params, s1[2].params),
  }
  elementwise = {
    "grads": _max_rel(_adam_mu(s8[1]), _adam_mu(s1[1])),
    "params": _max_rel(s8[1].params, s1[1].params),
  }
  print(f"{method}: 8-vs-1 relative differences {diffs}; per-leaf max-abs relative {elementwise}")
  for name, d in diffs.items():
    assert d <= RTOL, (name, d)
  # Per element only Adam's bound holds: a first step moves a weight by at most ~lr, so two
  # runs differ by < 2 lr even where a near-zero gradient flips sign (seen: 0.54 lr for BYOL).
  for a, b in zip(jax.tree.leaves(s8[1].params), jax.tree.leaves(s1[1].params)):
    np.testing.assert_allclose(a, b, rtol=0, atol=2 * LR_FN(0))
  for k in m1[0]:
    np.testing.assert_allclose(m8[0][k], m1[0][k], rtol=1e-4, atol=1e-6, err_msg=k)


@pytest.mark.parametrize("method", methods.METHODS)
def test_metrics_present_and_finite(method):
  _, metrics = _run(method, 1)
  expected = {
    "loss",
    "lr",
    "l2_grads",
    "l2_params",
    "l2_updates",
    "embedding_std",
    "pos_cos",
    "neg_cos",
    "risk_spearman",
    "risk_pairs",
  }
  expected |= {
    "clef": {"weighted_nce", "alignment", "temperature"},
    "simclr": {"temperature"},
    "moco": {"temperature"},
    "byol": set(),
  }[method]
  for m in metrics:
    assert set(m) == expected
    for k, v in m.items():
      assert v.shape == () and v.dtype == np.float32, k
      assert np.isfinite(v), k
  assert metrics[0]["risk_pairs"] == (B - 1) * (B - 2) / 2  # one subject lacks a risk
  np.testing.assert_allclose(metrics[0]["lr"], LR_FN(0), rtol=1e-7)
  assert metrics[0]["l2_grads"] > 0 and metrics[0]["l2_updates"] > 0


@pytest.mark.parametrize("method", ["clef", "simclr"])
def test_a_few_steps_reduce_the_loss(method):
  mesh, new_state, step, _ = _compiled(method, 1)
  state, batch = new_state(), sharding.shard_batch(_batch(), mesh)
  losses_ = []
  for _ in range(8):
    state, m = step(state, batch, jax.random.key(0))
    losses_.append(float(m["loss"]))
  assert losses_[-1] < losses_[0], losses_
  assert int(state.step) == 8


@pytest.mark.slow
def test_fsdp_matches_replicate():
  _, _, _, state_sharding = _compiled("clef", 8, "fsdp")
  specs = [s.spec for s in jax.tree.leaves(state_sharding.params)]
  assert any(spec != jax.sharding.PartitionSpec() for spec in specs)  # something is sharded
  s_rep, m_rep = _run("clef", 8)
  s_fsdp, m_fsdp = _run("clef", 8, "fsdp")
  for i in range(STEPS):
    assert _max_rel(m_fsdp[i]["loss"], m_rep[i]["loss"]) <= RTOL
    assert _global_rel(s_fsdp[i + 1], s_rep[i + 1]) <= RTOL


# ------------------------------------------------------------------------------------------------
# Method semantics.
# ------------------------------------------------------------------------------------------------
def test_byol_ema_update():
  states, _ = _run("byol", 1)
  s1, s2 = states[1], states[2]
  tau = methods.BYOL_TAU
  # Step 2 updates the target from the step-1 online weights *before* computing targets.
  expected = jax.tree.map(
    lambda t, o: tau * t + (1 - tau) * o, s1.ema_params, s1.params["backbone"]
  )
  assert _max_rel(s2.ema_params, expected) < 1e-6
  # Step 1: target starts as a copy of the online backbone, so it stays equal to it.
  assert _max_rel(s1.ema_params, states[0].params["backbone"]) < 1e-6
  # The predictor's BN running stats moved (two updates per step, momentum 0.9).
  assert _max_rel(s1.batch_stats, states[0].batch_stats) > 0


def test_moco_queue_double_enqueue():
  states, _ = _run("moco", 1)
  s0, s1, s2 = states
  assert int(s1.queue_ptr) == 2 * B and int(s2.queue_ptr) == 4 * B % QUEUE
  # Keys of step 1: view 2 through the (already momentum-updated) key encoder.
  x2 = _batch()["views"][:, 1]
  k = np.asarray(jax.jit(MODEL.apply)({"params": s1.ema_params}, x2)[0])  # (B, D)
  k_unit = k / np.linalg.norm(k, axis=1, keepdims=True)
  q1 = np.asarray(s1.queue)  # (D, K)
  np.testing.assert_allclose(q1[:, :B].T, k_unit, rtol=1e-4, atol=1e-6)  # normalised
  np.testing.assert_allclose(q1[:, B : 2 * B].T, k, rtol=1e-4, atol=1e-5)  # raw keys
  np.testing.assert_array_equal(q1[:, 2 * B :], np.asarray(s0.queue)[:, 2 * B :])  # untouched
  # The initial queue is unit-norm along D.
  np.testing.assert_allclose(np.linalg.norm(s0.queue, axis=0), 1.0, rtol=1e-5)


def test_moco_update_queue_single_and_double():
  queue = jnp.zeros((3, 8))
  keys = jnp.arange(6.0).reshape(2, 3) + 1.0  # (B=2, D=3)
  unit = keys / jnp.linalg.norm(keys, axis=1, keepdims=True)
  q, ptr = methods.moco_update_queue(queue, jnp.int32(6), keys, double_enqueue=False)
  assert int(ptr) == 0
  np.testing.assert_allclose(q[:, 6:].T, unit, rtol=1e-6)
  np.testing.assert_array_equal(q[:, :6], 0.0)
  q, ptr = methods.moco_update_queue(queue, jnp.int32(4), keys, double_enqueue=True)
  assert int(ptr) == 0  # 4 + 2 + 2 wraps to 0
  np.testing.assert_allclose(q[:, 4:6].T, unit, rtol=1e-6)
  np.testing.assert_allclose(q[:, 6:8].T, keys, rtol=1e-6)


def test_moco_rejects_queue_not_multiple_of_batch():
  state = jax.eval_shape(
    functools.partial(
      train.create_train_state,
      model=MODEL,
      tx=TX,
      method="moco",
      init_shape=(1, L, 1),
      backbone_params=_backbone_params(),
      moco_queue_size=QUEUE + 1,
    ),
    jax.random.key(0),
  )
  step = train.make_train_step(MODEL, TX, LR_FN, method="moco")
  with pytest.raises(ValueError, match="K % batch size B"):
    jax.eval_shape(step, state, _batch(), jax.random.key(0))


def test_state_layout():
  for method in methods.METHODS:
    state = jax.eval_shape(
      functools.partial(
        train.create_train_state,
        model=MODEL,
        tx=TX,
        method=method,
        init_shape=(1, L, 1),
        backbone_params=_backbone_params(),
        moco_queue_size=QUEUE,
      ),
      jax.random.key(0),
    )
    assert set(state.params) == ({"backbone", "predictor"} if method == "byol" else {"backbone"})
    assert (state.ema_params is None) == (method in ("clef", "simclr"))
    assert (state.batch_stats is None) == (method != "byol")
    assert (state.queue is None) == (method != "moco")
    if method == "moco":
      assert state.queue.shape == (64, QUEUE) and state.queue_ptr.dtype == jnp.int32
    if method == "byol":  # D -> D/2 -> D, with D = 64 this net's embedding width
      assert state.params["predictor"]["fc1"]["kernel"].shape == (64, 32)
      assert state.params["predictor"]["fc2"]["kernel"].shape == (32, 64)


def test_unknown_method_rejected():
  with pytest.raises(ValueError, match="Unknown pretraining method"):
    train.make_train_step(MODEL, TX, LR_FN, method="swav")


# ------------------------------------------------------------------------------------------------
# Monitoring metrics against numpy / scipy.
# ------------------------------------------------------------------------------------------------
def test_masked_spearman_matches_scipy():
  rng = np.random.default_rng(0)
  x = rng.standard_normal(40).astype(np.float32)
  y = (x + rng.standard_normal(40)).astype(np.float32)
  y[::5] = np.round(y[::5])  # ties
  x[:4] = x[4:8]  # more ties
  valid = rng.uniform(size=40) > 0.3
  y[~valid & (np.arange(40) % 2 == 0)] = np.nan  # NaNs only where invalid
  got = jax.jit(step_metrics.masked_spearman)(x, y, valid)
  want = scipy.stats.spearmanr(x[valid], y[valid]).statistic
  np.testing.assert_allclose(got, want, rtol=1e-5)
  # Undefined cases give NaN: < 3 valid entries, or a constant side.
  assert np.isnan(step_metrics.masked_spearman(x, y, np.arange(40) < 2))
  assert np.isnan(step_metrics.masked_spearman(np.ones(40, np.float32), y, valid))


def test_embedding_metrics_match_numpy():
  rng = np.random.default_rng(2)
  b, d = 6, 5
  z1 = rng.standard_normal((b, d)).astype(np.float32)
  z2 = (z1 + 0.5 * rng.standard_normal((b, d))).astype(np.float32)
  risk = rng.uniform(0, 10, b).astype(np.float32)
  risk[0] = np.nan
  got = jax.jit(step_metrics.embedding_metrics)(z1, z2, risk)
  u = np.concatenate([z1, z2]) / np.linalg.norm(np.concatenate([z1, z2]), axis=1, keepdims=True)
  s = u @ u.T
  subj = np.arange(2 * b) % b
  np.testing.assert_allclose(got["embedding_std"], u.std(axis=0).mean(), rtol=1e-5)
  np.testing.assert_allclose(got["pos_cos"], np.mean(np.sum(u[:b] * u[b:], 1)), rtol=1e-5)
  np.testing.assert_allclose(got["neg_cos"], s[subj[:, None] != subj[None]].mean(), rtol=1e-5)
  pairs = [(i, k) for i in range(1, b) for k in range(i + 1, b)]
  sim = [(s[i, k] + s[i, k + b] + s[i + b, k] + s[i + b, k + b]) / 4 for i, k in pairs]
  rsim = [-abs(risk[i] - risk[k]) for i, k in pairs]
  np.testing.assert_allclose(
    got["risk_spearman"], scipy.stats.spearmanr(sim, rsim).statistic, rtol=1e-5
  )
  assert got["risk_pairs"] == len(pairs)
  assert set(jax.jit(step_metrics.embedding_metrics)(z1, z2)) == {
    "embedding_std",
    "pos_cos",
    "neg_cos",
  }


@pytest.mark.parametrize("b, max_pairs", [(7, 5), (8, 21), (8, 28), (9, 100), (64, 300)])
def test_monitor_pairs_are_distinct_and_fixed(b, max_pairs):
  i, k = step_metrics.monitor_pairs(b, max_pairs)
  assert len(i) == min(max_pairs, b * (b - 1) // 2)
  pairs = {frozenset(p) for p in zip(i.tolist(), k.tolist())}
  assert len(pairs) == len(i) and all(len(p) == 2 for p in pairs)  # no repeats, no i == k
  np.testing.assert_array_equal(step_metrics.monitor_pairs(b, max_pairs)[1], k)
  # Every subject enters about equally often.
  counts = np.bincount(np.concatenate([i, k]), minlength=b)
  assert counts.max() - counts.min() <= 2
  # Enough pairs: all of them, in the upper-triangle order of the full statistic.
  full = step_metrics.monitor_pairs(b, b * b)
  np.testing.assert_array_equal(np.stack(full), np.stack(np.triu_indices(b, k=1)))


def test_sampled_risk_spearman_matches_scipy_on_its_pairs():
  rng = np.random.default_rng(5)
  b, d, max_pairs = 40, 16, 150
  z1 = rng.standard_normal((b, d)).astype(np.float32)
  z2 = (z1 + 0.5 * rng.standard_normal((b, d))).astype(np.float32)
  risk = rng.uniform(0, 10, b).astype(np.float32)
  risk[::7] = np.nan
  risk[1::9] = np.round(risk[1::9])
  got = jax.jit(lambda *a: step_metrics.embedding_metrics(*a, risk_pairs=max_pairs))(z1, z2, risk)
  u = np.concatenate([z1, z2]) / np.linalg.norm(np.concatenate([z1, z2]), axis=1, keepdims=True)
  s = u @ u.T
  i, k = step_metrics.monitor_pairs(b, max_pairs)
  keep = np.isfinite(risk[i]) & np.isfinite(risk[k])
  i, k = i[keep], k[keep]
  sim = (s[i, k] + s[i, k + b] + s[i + b, k] + s[i + b, k + b]) / 4
  want = scipy.stats.spearmanr(sim, -np.abs(risk[i] - risk[k])).statistic
  np.testing.assert_allclose(got["risk_spearman"], want, rtol=1e-5)
  assert got["risk_pairs"] == keep.sum() < max_pairs
  subj = np.arange(2 * b) % b
  np.testing.assert_allclose(
    got["neg_cos"], s[subj[:, None] != subj[None]].mean(), rtol=1e-5, atol=1e-6
  )
  # The step's default is a config field.
  from clef_jax.configs import small

  assert small.get_config().log.risk_spearman_pairs == step_metrics.RISK_SPEARMAN_PAIRS


def test_collapsed_embeddings_have_zero_std():
  z = jnp.ones((4, 8))
  m = step_metrics.embedding_metrics(z, z)
  assert float(m["embedding_std"]) < 1e-6
  np.testing.assert_allclose(m["pos_cos"], 1.0, rtol=1e-6)
  np.testing.assert_allclose(losses.info_nce(jnp.concatenate([z, z])), np.log(7.0), rtol=1e-5)
