"""music_scd on its dummy tree, against independent pandas / wfdb reads."""

import json

import numpy as np
import pandas as pd
import pytest

from clef_jax import build
from clef_jax import build_report as br
from clef_jax.data import schema

tfds = pytest.importorskip("tensorflow_datasets")
wfdb = pytest.importorskip("wfdb")


@pytest.fixture(scope="module")
def music(tmp_path_factory):
  root = build.dataset_module("music_scd", "dummy_data_generation").write_dummy_data(
    tmp_path_factory.mktemp("music_raw")
  )
  data_dir = tmp_path_factory.mktemp("tfds")
  report = json.loads(build.build("music_scd", data_dir=data_dir, manual_dir=root).read_text())
  builder = build.builder_class("music_scd")(data_dir=str(data_dir))
  splits = {
    s: {ex["record_id"].decode(): ex for ex in builder.as_data_source(split=s)}
    for s in builder.info.splits
  }
  return root, report, splits


def test_labels_split_and_skips(music):
  root, report, splits = music
  info = pd.read_csv(root / "subject-info.csv", sep=";", dtype=str)
  label_map = {0: 0, 1: 1, 3: 2, 6: 3, 7: 3}
  usable = [
    (r["Patient ID"], int(r["Cause of death"]))
    for _, r in info.iterrows()
    if (root / "Holter_ECG" / f"{r['Patient ID']}.hea").exists()
    and int(r["Cause of death"]) in label_map
  ]
  n = len(usable)
  want = {
    "train": usable[: int(0.7 * n)],
    "validation": usable[int(0.7 * n) : int(0.8 * n)],
    "test": usable[int(0.8 * n) :],
  }
  for split, items in want.items():
    got = splits.get(split, {})
    assert sorted(got) == sorted(p for p, _ in items if p != "P0009")  # No valid window.
    for pid, cause in items:
      if pid in got:
        assert int(got[pid]["label"]) == label_map[cause]
        assert int(got[pid]["cause_of_death"]) == cause
  skipped = {k: [e["record_id"] for e in v["examples"]] for k, v in report["skipped"].items()}
  assert skipped == {
    br.MISSING_HEADER: ["P0003"],
    br.MISSING_LABEL: ["P0006"],
    br.NO_VALID_WINDOW: ["P0009"],
  }


def test_window_values_match_wfdb(music):
  root, _, splits = music
  lead = schema.lead_index("I")
  for split in splits.values():
    for pid, ex in split.items():
      start = int(ex["window_start"])
      assert start == (5000 if pid == "P0007" else 0)
      assert int(ex["window_try"]) == (1 if pid == "P0007" else 0)
      ref = wfdb.rdrecord(
        str(root / "Holter_ECG" / pid), channels=[0], sampfrom=start, sampto=start + 2000
      )
      x = schema.to_physical(ex["signal"], ex["gain"], ex["baseline"])
      assert x.shape == (2000, 12) and ex["sampling_rate"] == 200
      np.testing.assert_array_equal(x[:, lead], ref.p_signal[:, 0].astype(np.float32))
      assert ex["channel_name"].decode() == "X"
  assert np.isnan(
    schema.to_physical(
      splits["validation"]["P0010"]["signal"],
      splits["validation"]["P0010"]["gain"],
      splits["validation"]["P0010"]["baseline"],
    )[100:200, lead]
  ).all()


def test_only_the_tried_windows_are_read(music, monkeypatch):
  root, _, _ = music
  module = build.dataset_module("music_scd")
  calls = []
  real = wfdb.rdrecord

  def spy(*args, **kwargs):
    calls.append((kwargs.get("sampfrom"), kwargs.get("sampto")))
    return real(*args, **kwargs)

  monkeypatch.setattr(wfdb, "rdrecord", spy)
  with pytest.raises(br.RecordError) as e:
    module.find_window(root / "Holter_ECG" / "P0009", module.Config(name="t"))
  assert e.value.reason == br.NO_VALID_WINDOW
  assert calls == [(0, 2000), (5000, 7000)]  # 11,000 samples: a third window does not fit.


def test_validity_rule():
  valid = build.dataset_module("music_scd").window_is_valid
  x = np.sin(np.arange(2000) / 10.0)
  assert valid(x)
  y = x.copy()
  y[:200] = 0.0  # Exactly 10 % zeros: invalid (the rule is < 10 %).
  assert not valid(y)
  y[:199] = np.nan
  y[199] = 0.1
  assert valid(y)  # 9.95 % NaN.
  assert not valid(np.full(2000, 0.004) + 1e-3 * np.sign(np.sin(np.arange(2000))))
