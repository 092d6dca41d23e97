"""aurora_bp on its dummy tree, against an independent pandas read of the tsv files."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from clef_jax import build
from clef_jax import build_report as br
from clef_jax.data import schema

tfds = pytest.importorskip("tensorflow_datasets")


def _split_like_sklearn(items, test_size, seed=42):
  """sklearn's ShuffleSplit rule, written out: ceil test size, RandomState permutation."""
  perm = np.random.RandomState(seed).permutation(len(items))
  n_test = math.ceil(test_size * len(items))
  return [items[i] for i in perm[n_test:]], [items[i] for i in perm[:n_test]]


@pytest.fixture(scope="module")
def aurora(tmp_path_factory):
  root = build.dataset_module("aurora_bp", "dummy_data_generation").write_dummy_data(
    tmp_path_factory.mktemp("aurora_raw")
  )
  data_dir = tmp_path_factory.mktemp("tfds")
  report = json.loads(build.build("aurora_bp", data_dir=data_dir, manual_dir=root).read_text())
  builder = build.builder_class("aurora_bp")(data_dir=str(data_dir))
  splits = {
    s: {ex["record_id"].decode(): ex for ex in builder.as_data_source(split=s)}
    for s in builder.info.splits
  }
  return root, report, splits


def test_split_counts_and_skips(aurora):
  root, report, splits = aurora
  participants = pd.read_csv(root / "participants.tsv", sep="\t")
  features = pd.read_csv(root / "features.tsv", sep="\t")
  merged = participants.merge(features, how="left", on="pid")
  valid = list(merged.dropna(subset=["baseline_sbp", "baseline_dbp"])["pid"].unique())
  train, rest = _split_like_sklearn(valid, 0.3)
  val, test = _split_like_sklearn(rest, 0.5)
  bad = {"a006", "a007"}  # No file / no ekg column.
  want = {"train": train, "validation": val, "test": test}
  for split, pids in want.items():
    assert sorted(splits.get(split, {})) == sorted(
      p for p in pids if p.startswith("a") and p not in bad
    )
  skipped = {k: [e["record_id"] for e in v["examples"]] for k, v in report["skipped"].items()}
  assert skipped == {
    br.MISSING_LABEL: ["a005"],
    br.MISSING_SIGNAL_FILE: ["a006"],
    br.READ_ERROR: ["a007"],
  }
  assert report["filtered"] == {"other_protocol": 2}
  assert report["records"]["kept"] == 9


def test_split_matches_scikit_learn():
  sklearn = pytest.importorskip("sklearn.model_selection")
  module = build.dataset_module("aurora_bp")
  pids = [f"a{k:03d}" for k in range(37)]
  ref_train, ref_rest = sklearn.train_test_split(np.array(pids), test_size=0.3, random_state=42)
  train, rest = module.sklearn_split(pids, 0.3)
  assert train == list(ref_train) and rest == list(ref_rest)


def test_values_targets_and_metadata(aurora):
  root, _, splits = aurora
  features = pd.read_csv(root / "features.tsv", sep="\t").groupby("pid").first()
  participants = pd.read_csv(root / "participants.tsv", sep="\t").set_index("pid")
  lead = schema.lead_index("I")
  for split in splits.values():
    for pid, ex in split.items():
      tsv = pd.read_csv(
        root / "measurements_auscultatory" / pid / f"{pid}.initial.Calibration_start_1.tsv",
        sep="\t",
      )
      ref = tsv["ekg"].dropna().to_numpy()
      x = schema.to_physical(ex["signal"], ex["gain"], ex["baseline"])
      assert x.shape == (ref.size, 12) and ex["sampling_rate"] == 500
      np.testing.assert_allclose(x[:, lead], ref, atol=5.1e-4)
      assert np.isnan(np.delete(x, lead, axis=1)).all()
      assert list(ex["lead_mask"]) == [i == lead for i in range(12)]
      assert int(ex["nan_dropped"]) == int(tsv["ekg"].isna().sum())
      assert ex["baseline_sbp"] == np.float32(features.loc[pid, "baseline_sbp"])
      assert ex["baseline_dbp"] == np.float32(features.loc[pid, "baseline_dbp"])
      meta = dict(zip(schema.METADATA_FIELDS, ex["metadata"]))
      assert meta["age"] == participants.loc[pid, "age"]
      assert meta["height_in"] == participants.loc[pid, "height"]
      assert meta["weight_lb"] == participants.loc[pid, "weight"]
      assert meta["sex"] == (1.0 if participants.loc[pid, "gender"] == "M" else 0.0)
      assert np.isnan(meta["sbp"]) and np.isnan(meta["dbp"])
  assert int(splits["train"]["a001"]["nan_dropped"]) == 3
