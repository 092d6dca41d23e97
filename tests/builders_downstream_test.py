"""The downstream-task builders (chapman, icentia11k, mc_med) on their dummy trees.

Every stored value is checked against an independent read of the dummy files (wfdb / csv), and
every planted bad record against its skip reason.
"""

import csv
import json
import random

import numpy as np
import pytest

from clef_jax import build
from clef_jax import build_report as br
from clef_jax.data import schema

tfds = pytest.importorskip("tensorflow_datasets")
wfdb = pytest.importorskip("wfdb")


def _build(name, data_dir, manual_dir, config=None, **kwargs):
  """Builds; returns `(report dict, {split: {example record_id: example}})`."""
  report_path = build.build(
    name, data_dir=data_dir, config=config, manual_dir=manual_dir, builder_kwargs=kwargs or None
  )
  builder = build.builder_class(name)(data_dir=str(data_dir), config=config, **kwargs)
  splits = {
    split: {ex["record_id"].decode(): ex for ex in builder.as_data_source(split=split)}
    for split in builder.info.splits
  }
  return json.loads(report_path.read_text()), splits


def _skips(report):
  return {k: sorted(e["record_id"] for e in v["examples"]) for k, v in report["skipped"].items()}


def _physical(ex):
  return schema.to_physical(ex["signal"], ex["gain"], ex["baseline"])


def _dummy(name, out_dir):
  return build.dataset_module(name, "dummy_data_generation").write_dummy_data(out_dir)


# ------------------------------------------------------------------------------------------------
# chapman
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chapman(tmp_path_factory):
  root = _dummy("chapman", tmp_path_factory.mktemp("chapman_raw"))
  return root, *_build("chapman", tmp_path_factory.mktemp("tfds"), root)


def test_chapman_counts_and_skips(chapman):
  _, report, splits = chapman
  assert {s: sorted(v) for s, v in splits.items()} == {
    "train": ["JS00001", "JS00002"],
    "validation": ["JS00003"],
    "test": ["JS00004", "JS00005"],
  }
  assert _skips(report) == {
    br.TOO_SHORT: ["JS00007"],
    br.DUPLICATE_RECORD: ["JS00001"],
    br.MISSING_HEADER: ["JS00099"],
    br.INVALID_ENTRY: ["JS00008"],
  }
  assert report["filtered"] == {"not_in_split": 1}
  assert report["records"]["kept"] == 5


def test_chapman_values_and_labels_match_the_files(chapman):
  root, _, splits = chapman
  labels = build.dataset_module("chapman").LABELS
  csv_rows = {}
  for name in ("train", "val", "test"):
    with (root / f"chapman_{name}.csv").open(newline="") as f:
      for row in csv.reader(f):
        if row[0] != "ecg_path":
          csv_rows.setdefault(row[0].rsplit("/", 1)[1][:-4], row)  # First listing wins.
  assert len(labels) == 38 and labels[0] == "AQW" and labels[-1] == "JEB"
  for split in splits.values():
    for record_id, ex in split.items():
      path = root / "WFDBRecords" / "01" / "010" / record_id
      ref = wfdb.rdrecord(str(path))
      assert ref.sig_name == list(schema.LEAD_ORDER)
      np.testing.assert_array_equal(_physical(ex), ref.p_signal.astype(np.float32))
      assert ex["sampling_rate"] == 500 and ex["lead_mask"].all()
      row = csv_rows[record_id]
      np.testing.assert_array_equal(ex["labels"], np.array(row[3:], np.uint8))
      assert ex["diagnose"].decode() == row[2]
      fields = dict(c.split(": ", 1) for c in ref.comments)
      assert list(ex["dx"]) == [int(c) for c in fields["Dx"].split(",")]
      assert ex["sex"].decode() == fields["Sex"][0]
      assert np.isnan(ex["age"]) if fields["Age"] == "NaN" else ex["age"] == float(fields["Age"])
      assert ex["patient_id"].decode() == record_id
  ex = splits["train"]["JS00001"]
  assert [labels[i] for i in np.flatnonzero(ex["labels"])] == ["RBBB", "AFIB"]


def test_chapman_split_csvs_are_checked(tmp_path):
  root = _dummy("chapman", tmp_path / "raw")
  with pytest.raises(FileNotFoundError, match="chapman_val.csv"):
    _build("chapman", tmp_path / "a", root, split_dir=str(tmp_path))
  text = (root / "chapman_test.csv").read_text().replace(",JEB", ",XYZ", 1)
  (root / "chapman_test.csv").write_text(text)
  with pytest.raises(ValueError, match="chapman_test.csv: expected the columns"):
    _build("chapman", tmp_path / "b", root)


def test_chapman_reads_real_ningbo_records(shared_data, tmp_path):
  """Real Ningbo records (the Challenge's copies of ecg-arrhythmia's JS2xxxx) laid out as the
  archive's `WFDBRecords/` tree."""
  labels = build.dataset_module("chapman").LABELS
  columns = build.dataset_module("chapman").LEADING_COLUMNS + labels
  folder = tmp_path / "raw" / "WFDBRecords" / "20" / "200"
  folder.mkdir(parents=True)
  names = [f"JS2000{i}" for i in range(5)]
  for name in names:
    for ext in (".hea", ".mat"):
      (folder / f"{name}{ext}").symlink_to(shared_data / "cinc2021" / f"{name}{ext}")
  for split, listed in (("train", names[:3]), ("val", names[3:4]), ("test", names[4:])):
    with (tmp_path / "raw" / f"chapman_{split}.csv").open("w", newline="") as f:
      writer = csv.writer(f)
      writer.writerow(columns)
      for i, name in enumerate(listed):
        cells = ["1" if j == i else "0" for j in range(len(labels))]
        writer.writerow([f"/chapman/WFDBRecords/20/200/{name}.mat", "60", labels[i], *cells])
  report, splits = _build("chapman", tmp_path / "tfds", tmp_path / "raw")
  assert report["records"]["kept"] == 5 and not report["skipped"]
  assert report["flags"][br.FLAT_LEAD]["examples"][0]["record_id"] == "JS20004"
  examples = {k: v for split in splits.values() for k, v in split.items()}
  for name in names:
    ref = wfdb.rdrecord(str(folder / name))
    order = [schema.lead_index(n) for n in ref.sig_name]
    np.testing.assert_array_equal(
      _physical(examples[name])[:, order], ref.p_signal.astype(np.float32)
    )
    dx = dict(c.split(": ", 1) for c in ref.comments)["Dx"]
    assert list(examples[name]["dx"]) == [int(c) for c in dx.split(",")]


# ------------------------------------------------------------------------------------------------
# icentia11k
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def icentia_root(tmp_path_factory):
  return _dummy("icentia11k", tmp_path_factory.mktemp("icentia_raw"))


def _expected_split(root):
  """The split re-derived: random.seed(42) shuffle of the RECORDS list, 70/15/15."""
  patients = [
    line.strip().strip("/").split("/")[-1] for line in (root / "RECORDS").read_text().split()
  ]
  random.seed(42)
  random.shuffle(patients)
  n_train, n_val = int(0.7 * len(patients)), int(0.15 * len(patients))
  return {
    p: "train" if i < n_train else "validation" if i < n_train + n_val else "test"
    for i, p in enumerate(patients)
  }


@pytest.mark.parametrize(
  "config, classes, expected",
  [
    (
      "beat",
      ("N", "S", "V"),
      {
        "p00000": {"N": "s00", "S": "s00", "V": "s01"},
        "p00001": {"N": "s00"},
        "p00004": {"N": "s01"},
        "p00005": {"N": "s00"},
        "p00006": {"N": "s00"},
        "p00007": {"N": "s00"},
      },
    ),
    (
      "rhythm",
      ("N", "AFIB", "AFL"),
      {
        "p00000": {"N": "s00", "AFIB": "s01"},
        "p00001": {"N": "s00"},
        "p00004": {"N": "s01"},
        "p00005": {"N": "s00"},
        "p00006": {"N": "s00"},
        "p00007": {"N": "s00"},
      },
    ),
  ],
)
def test_icentia_windows_labels_and_split(
  icentia_root, tmp_path, monkeypatch, config, classes, expected
):
  reads = []
  rdrecord = wfdb.rdrecord

  def spy(*args, **kwargs):
    reads.append((kwargs.get("sampfrom"), kwargs.get("sampto")))
    return rdrecord(*args, **kwargs)

  monkeypatch.setattr(wfdb, "rdrecord", spy)
  report, splits = _build("icentia11k", tmp_path, icentia_root, config=config)
  monkeypatch.undo()
  # Only the stored windows' samples were read from the signal files.
  assert reads and all(stop - start == 2500 for start, stop in reads)
  assert _skips(report) == {br.INVALID_ENTRY: ["p00003"], br.NO_VALID_WINDOW: ["p00002"]}
  assert report["flags"]["segment_unreadable"]["examples"][0]["record_id"] == "p00004"

  want_split = _expected_split(icentia_root)
  got = {}
  for split, examples in splits.items():
    for record_id, ex in examples.items():
      patient, name = ex["patient_id"].decode(), ex["label_name"].decode()
      segment = ex["segment"].decode()
      assert record_id == f"{segment}:{name}" and want_split[patient] == split
      assert classes[int(ex["label"])] == name
      got.setdefault(patient, {})[name] = segment[-3:]
      path = str(icentia_root / "p00" / patient / segment)
      ann = wfdb.rdann(path, "atr")
      at = list(ann.sample).index(int(ex["sample"]))
      start = int(ex["start"])
      if config == "beat":
        assert ann.symbol[at] == name and start == int(ex["sample"]) - 1250
      else:
        assert ann.symbol[at] == "+" and ann.aux_note[at] == f"({name}"
        assert start == int(ex["sample"])
      ref = wfdb.rdrecord(path, sampfrom=start, sampto=start + 2500).p_signal[:, 0]
      x = _physical(ex)
      assert x.shape == (2500, 12) and ex["sampling_rate"] == 250
      np.testing.assert_array_equal(x[:, 0], ref.astype(np.float32))
      assert ex["lead_mask"].tolist() == [True] + [False] * 11
      assert np.isnan(x[:, 1:]).all()
  assert got == expected


def test_icentia_beat_draw_is_among_the_fitting_beats(icentia_root, tmp_path):
  _, splits = _build("icentia11k", tmp_path, icentia_root, config="beat")
  ex = {k: v for s in splits.values() for k, v in s.items()}["p00000_s00:N"]
  # s00's N beats at 300 (too close to the start), 1500, 2600, 3700.
  assert int(ex["sample"]) in (1500, 2600, 3700)


@pytest.mark.slow
def test_icentia_worker_processes_give_the_same_dataset(icentia_root, tmp_path):
  _, serial = _build("icentia11k", tmp_path / "a", icentia_root, config="beat")
  _, parallel = _build("icentia11k", tmp_path / "b", icentia_root, config="beat", num_workers=2)
  assert serial.keys() == parallel.keys()
  for split in serial:
    assert serial[split].keys() == parallel[split].keys()
    for k, ex in serial[split].items():
      np.testing.assert_array_equal(ex["signal"], parallel[split][k]["signal"])
      assert ex["sample"] == parallel[split][k]["sample"]


# ------------------------------------------------------------------------------------------------
# mc_med
# ------------------------------------------------------------------------------------------------

# CSN -> (split, ed_dispo, dc_dispo, acuity, sbp, dbp, patient) written by the dummy generator.
MC_MED_EXPECTED = {
  "10000101": ("train", 0, 0, 2, 120.0, 80.0, "501"),
  "10000102": ("train", 1, 1, 1, 150.0, 95.0, "502"),
  "10000203": ("train", 3, 3, 0, np.nan, np.nan, "503"),
  "10000204": ("validation", 2, 2, 3, 130.0, 70.0, "502"),
  "10000305": ("test", 0, 4, 4, 110.0, 60.0, "504"),
  "10000306": ("test", 0, 5, 2, 100.0, 65.0, "505"),
}


@pytest.fixture(scope="module")
def mc_med(tmp_path_factory):
  root = _dummy("mc_med", tmp_path_factory.mktemp("mc_med_raw"))
  return root, *_build("mc_med", tmp_path_factory.mktemp("tfds"), root)


def test_mc_med_counts_labels_and_skips(mc_med):
  _, report, splits = mc_med
  got = {}
  for split, examples in splits.items():
    for csn, ex in examples.items():
      got[csn] = (
        split,
        int(ex["ed_dispo"]),
        int(ex["dc_dispo"]),
        int(ex["triage_acuity"]),
        float(ex["triage_sbp"]),
        float(ex["triage_dbp"]),
        ex["patient_id"].decode(),
      )
  assert got.keys() == MC_MED_EXPECTED.keys()
  for csn, want in MC_MED_EXPECTED.items():
    np.testing.assert_equal(got[csn], want)
  assert _skips(report) == {
    br.MISSING_LEAD: ["10000407"],
    br.MISSING_HEADER: ["10000408"],
    br.MISSING_LABEL: ["10000509"],
    br.ALL_LEADS_MISSING: ["10000510"],
    br.INVALID_ENTRY: ["10000611"],
    br.DUPLICATE_RECORD: ["10000101"],
  }
  assert report["filtered"] == {"not_in_split": 1}
  flags = {k: [e["record_id"] for e in v["examples"]] for k, v in report["flags"].items()}
  assert flags[br.UNKNOWN_LABEL] == ["10000305"] and flags[br.ZERO_PADDED] == ["10000102"]
  assert flags[br.RESAMPLED] == ["10000204"] and flags["missing_label:triage_sbp"] == ["10000203"]
  ex = splits["test"]["10000305"]
  assert ex["ed_dispo_text"].decode() == "Left without being seen"
  assert ex["dc_dispo_text"].decode() == "Psychiatric Hospital"
  assert ex["triage_acuity_text"].decode() == "5-Non-Urgent" and ex["ii_n_segments"] == 1


def test_mc_med_signals_match_wfdb(mc_med):
  root, _, splits = mc_med
  examples = {k: v for s in splits.values() for k, v in s.items()}
  for csn, ex in examples.items():
    path = str(root / "waveforms" / csn[-3:] / csn / "II" / f"{csn}_1")
    ref = wfdb.rdrecord(path)
    x = _physical(ex)
    assert x.shape == (5000, 12) and ex["sampling_rate"] == 500
    assert ex["lead_mask"].tolist() == [False, True] + [False] * 10
    lead_ii = x[:, 1]
    if ref.fs == 500:
      n = min(5000, ref.sig_len)
      np.testing.assert_array_equal(lead_ii[:n], ref.p_signal[:n, 0].astype(np.float32))
      np.testing.assert_array_equal(lead_ii[n:], 0.0)  # Padded with 0 mV.
    else:  # 250 Hz: the first 10 s, resampled.
      t = np.arange(5000) / 500
      ref_500 = np.interp(t, np.arange(ref.sig_len) / ref.fs, ref.p_signal[:, 0])
      assert np.corrcoef(lead_ii, ref_500)[0, 1] > 0.98
  with (root / "visits.csv").open(newline="") as f:
    ages = {r["CSN"]: float(r["Age"]) for r in csv.DictReader(f)}
  for csn, ex in examples.items():
    assert ex["metadata"][schema.METADATA_FIELDS.index("age")] == ages[csn]
    assert np.isnan(ex["metadata"][schema.METADATA_FIELDS.index("sbp")])


def test_mc_med_class_maps():
  m = build.dataset_module("mc_med")
  assert m.ed_dispo_class("ICU") == (3, True) and m.ed_dispo_class("Transfer") == (0, False)
  assert m.ed_dispo_class("") == (-1, True)
  assert m.dc_dispo_class("Left Against Medical Advice") == 0
  assert m.dc_dispo_class("Home Health Services") == 1
  assert m.dc_dispo_class("Expired to be Readmitted as Donor") == 3
  assert m.dc_dispo_class("Inpatient Rehabilitation Facility") == 4
  assert m.dc_dispo_class(None) == -1
  assert m.acuity_class("1-Resuscitation") == (0, True) and m.acuity_class("5") == (4, True)
  assert m.acuity_class("9-Foo") == (-1, False)
  assert len(m.DC_DISPO_CLASSES) == 6 and len(m.ACUITY_CLASSES) == 5
