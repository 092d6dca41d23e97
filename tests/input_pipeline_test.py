"""Tests for `clef_jax.input_pipeline`: shapes, no NaN, determinism, state, multi-process split."""

import jax
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from clef_jax import build, noise, synthetic
from clef_jax import input_pipeline as ip
from clef_jax.data import schema

BATCH = 8
WINDOW = 5000


def _adversarial(records):
  """Edits a few records into the awkward cases real archives bring."""
  recs = [dict(r) for r in records]
  sig = recs[0]["signal"].copy()
  sig[100:400, :] = schema.INT16_NAN  # a NaN gap in every lead
  sig[:, 4] = schema.INT16_NAN  # an all-NaN lead still marked available
  recs[0]["signal"] = sig
  recs[1]["lead_mask"] = np.zeros(12, bool)  # no lead flagged available
  recs[1]["signal"] = np.full_like(recs[1]["signal"], schema.INT16_NAN)
  recs[2]["signal"] = recs[2]["signal"][:3000]  # short record: zero-padded
  recs[3]["signal"] = np.concatenate([recs[3]["signal"], recs[3]["signal"][:1000]])  # long
  recs[4]["signal"] = recs[4]["signal"][::2]  # 250 Hz: resampled to 500 Hz
  recs[4]["sampling_rate"] = np.float32(250.0)
  recs[5]["signal"] = np.repeat(recs[5]["signal"], 2, axis=0)  # 1000 Hz
  recs[5]["sampling_rate"] = np.float32(1000.0)
  recs[6]["signal"] = recs[6]["signal"][:20]  # shorter than the filter padding
  return recs


@pytest.fixture(scope="module")
def records():
  recs = list(synthetic.generate_records(seed=5, start=0, stop=24))
  return _adversarial(recs)


@pytest.fixture(scope="module")
def built_dir(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp("tfds")
  builder = build.builder_class("synthetic_ecg")(data_dir=data_dir, config="tiny")
  builder.download_and_prepare(file_format="array_record")
  return data_dir


@pytest.fixture(scope="module")
def built_source(built_dir):
  return ip.load_data_source("synthetic_ecg/tiny", split="train", data_dir=built_dir)


def _take(it, n):
  return [next(it) for _ in range(n)]


def _assert_same(batches_a, batches_b):
  assert len(batches_a) == len(batches_b)
  for a, b in zip(batches_a, batches_b):
    assert a.keys() == b.keys()
    for k in a:
      np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=k)


def test_batch_contract_and_no_nan(records):
  it = ip.make_pretrain_iterator(data_source=records, global_batch_size=BATCH, seed=0, num_epochs=4)
  n = 0
  for batch in it:
    n += 1
    assert batch["views"].shape == (BATCH, 2, WINDOW) and batch["views"].dtype == np.float32
    assert batch["risk"].shape == batch["rate_meta"].shape == batch["index"].shape == (BATCH,)
    assert batch["leads"].shape == (BATCH, 2)
    assert np.isfinite(batch["views"]).all()
    for i, idx in enumerate(batch["index"]):
      meta = records[idx]["metadata"]
      np.testing.assert_array_equal(batch["risk"][i], meta[schema.RISK_INDEX])
      np.testing.assert_array_equal(batch["rate_meta"][i], meta[schema.RATE_META_INDEX])
      if idx == 2:  # short record: z-scored over 3000 samples, zeros after
        assert not batch["views"][i, :, 3000:].any()
        np.testing.assert_allclose(batch["views"][i, :, :3000].std(-1), 1.0, atol=1e-3)
      elif idx != 6:
        np.testing.assert_allclose(batch["views"][i].mean(-1), 0.0, atol=1e-4)
    lead_masks = np.stack([records[i]["lead_mask"] for i in batch["index"]])
    has_any = lead_masks.any(axis=1)
    chosen = lead_masks[np.arange(BATCH)[:, None], batch["leads"]]
    assert chosen[has_any].all()  # views only from available leads
  assert n == 4 * len(records) // BATCH


def test_epochs_cover_records_and_reshuffle(records):
  ds = ip.make_pretrain_dataset(data_source=records, global_batch_size=BATCH, seed=1, num_epochs=2)
  per_epoch = len(records) // BATCH
  epochs = [
    np.concatenate([ds[e * per_epoch + i]["index"] for i in range(per_epoch)]) for e in range(2)
  ]
  for order in epochs:
    assert sorted(order) == list(range(len(records)))
  assert not np.array_equal(epochs[0], epochs[1])


def test_same_pair_probability(records):
  # A long source: grain's index_shuffle is slow (ms per element) on very short datasets.
  ds = ip.make_pretrain_dataset(
    data_source=records[7:] * 60,
    global_batch_size=16,
    seed=0,
    augment=ip.AugmentConfig(bandpass=False, noise=False),
  )
  leads = np.concatenate([ds[i]["leads"] for i in range(40)])  # 640 pairs, sd 0.015
  assert np.mean(leads[:, 0] == leads[:, 1]) == pytest.approx(0.8 + 0.2 / 12, abs=0.05)


def test_views_follow_the_official_chain(records):
  """Recompute one record's views with the per-sample ops from the draws `TwoViews` made."""
  from clef_jax import preprocess as pp

  aug = ip.AugmentConfig()
  two = ip.TwoViews(augment=aug)
  rec = dict(records[10], index=10)
  drawn = two.random_map(dict(rec), np.random.default_rng(3))
  out = ip.AugmentBatch(augment=aug).map({k: np.asarray(v)[None] for k, v in drawn.items()})
  x = schema.to_physical(rec["signal"], rec["gain"], rec["baseline"])
  bank = ip.noise_bank(None)
  for v in range(2):
    lead = drawn["leads"][v]
    y = pp.bandpass(pp.interpolate_nan(x[:WINDOW, lead]), 500)
    y = y + noise.noise_window(bank, drawn["kind"][v], drawn["row"][v], drawn["start"][v], WINDOW)
    s, n = drawn["mask_start"][v], drawn["mask_len"][v]
    y[s : s + n] = 0.0
    np.testing.assert_allclose(out["views"][0, v], pp.zscore(y), atol=2e-5)


def test_fixed_lead_and_faithful_rows(records):
  aug = ip.AugmentConfig(faithful=True)
  ds = ip.make_pretrain_dataset(
    data_source=records[7:], global_batch_size=BATCH, seed=0, augment=aug, lead_policy="aVR"
  )
  assert (ds[0]["leads"] == schema.lead_index("aVR")).all()
  two = ip.TwoViews(augment=aug, lead_policy="aVF")
  rows = [
    two.random_map(dict(records[9], index=9), np.random.default_rng(s))["row"] for s in range(40)
  ]
  assert not np.any(rows)  # aVF noise comes from lead I's row, as in the official code
  two = ip.TwoViews(lead_policy="aVF")
  rows = np.array(
    [two.random_map(dict(records[9], index=9), np.random.default_rng(s))["row"] for s in range(40)]
  )
  assert set(np.unique(rows)) <= {0, schema.lead_index("aVF")}  # 0 only for identity draws
  with pytest.raises(KeyError):
    ip.make_pretrain_dataset(data_source=records, global_batch_size=BATCH, seed=0, lead_policy="V7")


def test_state_round_trip(records):
  it = ip.make_pretrain_iterator(data_source=records, global_batch_size=BATCH, seed=3)
  _take(it, 3)
  state = it.get_state()
  expected = _take(it, 4)
  fresh = ip.make_pretrain_iterator(data_source=records, global_batch_size=BATCH, seed=3)
  fresh.set_state(state)
  _assert_same(_take(fresh, 4), expected)
  other = ip.make_pretrain_iterator(data_source=records, global_batch_size=BATCH, seed=4)
  first = ip.make_pretrain_iterator(data_source=records, global_batch_size=BATCH, seed=3)
  assert not np.array_equal(next(other)["views"], next(first)["views"])


def test_processes_split_the_stream(records):
  """Each process reads a disjoint share; together they give the one-process batches."""
  steps = 6
  single = _take(
    ip.make_pretrain_iterator(data_source=records, global_batch_size=BATCH, seed=7), steps
  )
  shares = [
    _take(
      ip.make_pretrain_iterator(
        data_source=records, global_batch_size=BATCH, seed=7, process_index=p, process_count=2
      ),
      steps,
    )
    for p in range(2)
  ]
  for step in range(steps):
    parts = [shares[p][step] for p in range(2)]
    assert all(part["views"].shape[0] == BATCH // 2 for part in parts)
    # What make_array_from_process_local_data assembles: the processes' rows in process order.
    merged = {k: np.concatenate([part[k] for part in parts]) for k in parts[0]}
    order = np.argsort(merged["index"], kind="stable")
    want = np.argsort(single[step]["index"], kind="stable")
    for k in merged:
      np.testing.assert_array_equal(merged[k][order], single[step][k][want], err_msg=k)
  # First epoch (24 records = 3 steps): the two shares are disjoint and cover every record.
  epoch = [np.concatenate([b["index"] for b in share[:3]]) for share in shares]
  assert not set(epoch[0]) & set(epoch[1])
  assert sorted(np.concatenate(epoch)) == list(range(len(records)))
  with pytest.raises(ValueError):
    ip.make_pretrain_dataset(data_source=records, global_batch_size=9, seed=0, process_count=2)


def test_sharded_global_arrays(records):
  mesh = Mesh(np.asarray(jax.devices()), ("data",))
  sharding = NamedSharding(mesh, P("data"))
  it = ip.make_pretrain_iterator(
    data_source=records, global_batch_size=BATCH, seed=2, sharding=sharding
  )
  host = ip.make_pretrain_iterator(data_source=records, global_batch_size=BATCH, seed=2)
  _take(it, 1), _take(host, 1)
  state = it.get_state()
  batch = next(it)
  assert isinstance(batch["views"], jax.Array) and batch["views"].sharding == sharding
  assert len(batch["views"].addressable_shards) == len(jax.devices())
  _assert_same([batch], [next(host)])
  again = ip.make_pretrain_iterator(
    data_source=records, global_batch_size=BATCH, seed=2, sharding=sharding
  )
  again.set_state(state)
  _assert_same([next(again)], [batch])


def test_orbax_checkpoint_of_iterator(records, tmp_path):
  import grain
  import orbax.checkpoint as ocp

  it = ip.make_pretrain_iterator(data_source=records, global_batch_size=BATCH, seed=9)
  _take(it, 2)
  with ocp.CheckpointManager(tmp_path / "ckpt") as mngr:
    mngr.save(2, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it)))
    mngr.wait_until_finished()
  expected = _take(it, 2)
  fresh = ip.make_pretrain_iterator(data_source=records, global_batch_size=BATCH, seed=9)
  with ocp.CheckpointManager(tmp_path / "ckpt") as mngr:
    mngr.restore(2, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(fresh)))
  _assert_same(_take(fresh, 2), expected)


def test_built_shards_no_nan(built_source):
  assert len(built_source) == 32
  it = ip.make_pretrain_iterator(
    data_source=built_source, global_batch_size=BATCH, seed=0, num_epochs=3
  )
  batches = list(it)
  assert len(batches) == 3 * 32 // BATCH
  assert all(np.isfinite(b["views"]).all() for b in batches)


@pytest.mark.slow
def test_workers_do_not_change_batches_and_state_restores(records):
  """Same batches for 0, 1 and 2 worker processes; state round trip after mp_prefetch.

  Slow only because each worker process imports jax and scipy (seconds each).
  """

  def make(workers):
    return ip.make_pretrain_iterator(
      data_source=records, global_batch_size=BATCH, seed=11, num_workers=workers
    )

  reference = _take(make(0), 6)
  one = make(1)
  _assert_same(_take(one, 6), reference)
  one.close()
  two = make(2)
  got = _take(two, 3)
  state = two.get_state()
  got += _take(two, 3)
  two.close()
  _assert_same(got, reference)
  fresh = make(2)  # grain's worker state is per worker: restore with the same worker count
  fresh.set_state(state)
  _assert_same(_take(fresh, 3), reference[3:])
  fresh.close()


def test_lean_decode_matches_tfds(built_source, built_dir):
  assert isinstance(built_source, ip.LeanSource) and not built_source.zlib_signal  # bytes default.
  full = ip.load_data_source("synthetic_ecg/tiny", split="train", data_dir=built_dir, lean=False)
  assert isinstance(full[0], dict)
  for i in (0, 5, 31):
    lean = built_source[i]
    ref = full[i]
    for key, value in lean.items():
      if np.ndim(value):
        assert value.dtype == ref[key].dtype, key
      np.testing.assert_array_equal(value, ref[key], err_msg=key)
