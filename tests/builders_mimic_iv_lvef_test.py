"""mimic_iv_lvef on its dummy tree, against independent csv / wfdb reads."""

import csv
import json

import numpy as np
import pytest

from clef_jax import build
from clef_jax import build_report as br
from clef_jax.data import schema

tfds = pytest.importorskip("tensorflow_datasets")
wfdb = pytest.importorskip("wfdb")


@pytest.fixture(scope="module")
def lvef_root(tmp_path_factory):
  return build.dataset_module("mimic_iv_lvef", "dummy_data_generation").write_dummy_data(
    tmp_path_factory.mktemp("lvef_raw")
  )


def _build(root, data_dir, config):
  report = json.loads(
    build.build("mimic_iv_lvef", data_dir=data_dir, manual_dir=root, config=config).read_text()
  )
  builder = build.builder_class("mimic_iv_lvef")(data_dir=str(data_dir), config=config)
  return report, {
    s: {ex["record_id"].decode(): ex for ex in builder.as_data_source(split=s)}
    for s in builder.info.splits
  }


def _csv_rows(root):
  with (root / "LVEF.csv").open(newline="") as f:
    return list(csv.DictReader(f))


def test_csv_class_labels_values_and_row_split(lvef_root, tmp_path):
  report, splits = _build(lvef_root, tmp_path, "csv_class")
  rows = _csv_rows(lvef_root)
  n = len(rows)  # Split by position: [0, int(.8 n)) train, then half / half.
  expect_split = {
    i: "train"
    if i < int(0.8 * n)
    else "validation"
    if i < int(0.8 * n) + (n - int(0.8 * n)) // 2
    else "test"
    for i in range(n)
  }
  stored = {rid: (split, ex) for split, exs in splits.items() for rid, ex in exs.items()}
  assert sorted(stored) == ["40000001", "40000002", "40000003", "40000004", "40000005", "40000006"]
  for rid, (split, ex) in stored.items():
    i = int(ex["row"])
    row = rows[i]
    assert split == expect_split[i]
    assert row["waveform_path"].endswith(rid) and ex["path"].decode() == row["waveform_path"]
    assert int(ex["lvef_class"]) == int(row["class"]) == int(ex["lvef_class_csv"])
    if row["LVEF"]:
      assert ex["lvef"] == np.float32(row["LVEF"])
    else:
      assert np.isnan(ex["lvef"])
    assert ex["patient_id"].decode() == row["subject_id"]
    ref = wfdb.rdrecord(str(lvef_root / row["waveform_path"]))
    order = [schema.lead_index(name) for name in ref.sig_name]
    x = schema.to_physical(ex["signal"], ex["gain"], ex["baseline"])
    np.testing.assert_array_equal(x[:, order], ref.p_signal.astype(np.float32))
  assert int(stored["40000005"][1]["row"]) == 8  # Row 6 (no label) did not take its place.
  skipped = {k: [e["record_id"] for e in v["examples"]] for k, v in report["skipped"].items()}
  assert skipped == {
    br.DUPLICATE_RECORD: ["40000001"],
    br.INVALID_ENTRY: ["row5"],
    br.MISSING_HEADER: ["49999999"],
    br.MISSING_LABEL: ["40000005"],
  }
  assert report["flags"]["lvef_out_of_range"]["examples"][0]["record_id"] == "40000003"
  # Metadata joined from the mimic_iv_ecg metadata CSV by path.
  assert stored["40000001"][1]["metadata"][schema.METADATA_FIELDS.index("age")] == 52


def test_threshold_config(lvef_root, tmp_path):
  report, splits = _build(lvef_root, tmp_path, "lvef_lt_50")
  rows = _csv_rows(lvef_root)
  stored = {rid: ex for exs in splits.values() for rid, ex in exs.items()}
  assert sorted(stored) == ["40000001", "40000002", "40000003", "40000005", "40000006"]
  for ex in stored.values():
    assert int(ex["lvef_class"]) == int(float(rows[int(ex["row"])]["LVEF"]) < 50)
  assert int(stored["40000002"]["lvef_class"]) == 1  # LVEF 35 %: reduced, although class 0.
  assert int(stored["40000002"]["lvef_class_csv"]) == 0
  assert sorted(e["record_id"] for e in report["skipped"][br.MISSING_LABEL]["examples"]) == [
    "40000004",
    "40000005",
  ]
