"""Builds every archive builder into `tmp_path` (dummy trees + the real shared records)."""

import csv
import io
import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
import scipy.signal

from clef_jax import build
from clef_jax import build_report as br
from clef_jax.data import parsing, schema, windows

tfds = pytest.importorskip("tensorflow_datasets")
wfdb = pytest.importorskip("wfdb")


def _build(name, data_dir, manual_dir, config=None, **kwargs):
  """Builds and returns `(report dict, {split: data source})`."""
  report_path = build.build(
    name, data_dir=data_dir, config=config, manual_dir=manual_dir, builder_kwargs=kwargs or None
  )
  builder = build.builder_class(name)(data_dir=str(data_dir), config=config, **kwargs)
  sources = {split: builder.as_data_source(split=split) for split in builder.info.splits}
  return json.loads(report_path.read_text()), sources


def _by_id(source):
  return {(ex["record_id"].decode(), int(ex.get("window_index", 0))): ex for ex in source}


def _physical(ex):
  return schema.to_physical(ex["signal"], ex["gain"], ex["baseline"])


def _dummy(name, out_dir):
  return build.dataset_module(name, "dummy_data_generation").write_dummy_data(out_dir)


# ------------------------------------------------------------------------------------------------
# physionet_challenge on the real shared records.
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def challenge_real(shared_data, tmp_path_factory):
  """`all_windows` build of cinc2021 (49 records) + ptb_diagnostic (1 record, 3 windows)."""
  data_dir = tmp_path_factory.mktemp("tfds")
  report, sources = _build("physionet_challenge", data_dir, shared_data, config="all_windows")
  return report, _by_id(sources["train"]), data_dir


def test_challenge_real_report(challenge_real):
  report, examples, data_dir = challenge_real
  assert report["records"] == {"seen": 50, "kept": 50, "skipped": 0, "filtered": 0}
  assert report["examples"] == {"train": 52}
  assert report["windows_per_record"] == {"1": 49, "3": 1}
  assert report["flags"][br.RESAMPLED]["examples"][0]["record_id"] == "s0010_re"
  assert report["flags"][br.EXTRA_LEAD]["count"] == 1
  version_dir = data_dir / "physionet_challenge" / "all_windows" / "1.0.0"
  assert (version_dir / br.REPORT_FILENAME).is_file()
  assert not list(version_dir.parent.glob("incomplete*"))
  assert len(examples) == 52


def test_challenge_real_values_match_wfdb(challenge_real, shared_data):
  _, examples, _ = challenge_real
  for path in sorted((shared_data / "cinc2021").glob("*.hea")):
    ref = wfdb.rdrecord(str(path.with_suffix("")))
    ex = examples[(path.stem, 0)]
    order = [schema.lead_index(n) for n in ref.sig_name]
    np.testing.assert_array_equal(_physical(ex)[:, order], ref.p_signal.astype(np.float32))
    fields = parsing.parse_header_comments(ref.comments)
    assert [int(c) for c in ex["dx"]] == [int(c) for c in fields["dx"].split(",")]
    assert ex["age"] == float(fields["age"])
    assert ex["sex"].decode() == fields["sex"][0]
    assert ex["source"].decode() == path.stem.rstrip("0123456789")
    assert ex["patient_id"] == ex["record_id"]
    assert ex["sampling_rate"] == 500
  # Chapman records with flat (all-zero) chest leads: kept, those leads masked.
  assert not examples[("JS20004", 0)]["lead_mask"][[7, 9, 11]].any()


def test_challenge_real_ptb_windows(challenge_real, shared_data):
  _, examples, _ = challenge_real
  ref = wfdb.rdrecord(str(shared_data / "ptb_diagnostic" / "s0010_re"))
  expected = scipy.signal.resample_poly(ref.p_signal[:, :12], 1, 2, axis=0, padtype="line")
  for w in range(3):
    ex = examples[("s0010_re", w)]
    assert ex["window_index"] == w and ex["signal"].shape == (5000, 12)
    np.testing.assert_allclose(_physical(ex), expected[w * 5000 : (w + 1) * 5000], atol=5e-4 + 1e-6)
  assert ex["age"] == 81 and ex["sex"] == b"F" and len(ex["dx"]) == 0
  assert ex["metadata"][1] == 81


@pytest.mark.slow
def test_read_back_without_builder_code(challenge_real):
  """A fresh interpreter reads the dataset from `data_dir` alone (TFDS read-only builder)."""
  _, _, data_dir = challenge_real
  code = (
    "import sys, tensorflow_datasets as tfds;"
    f"ds = tfds.data_source('physionet_challenge/all_windows', data_dir={str(data_dir)!r},"
    " split='train'); ex = ds[0];"
    "assert 'physionet_challenge' not in sys.modules;"
    "print(len(ds), ex['signal'].shape, ex['signal'].dtype)"
  )
  out = subprocess.run(
    [sys.executable, "-c", code], capture_output=True, text=True, cwd="/", timeout=120
  )
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.split()[0] == "52"


# ------------------------------------------------------------------------------------------------
# physionet_challenge on the dummy tree, plus one crafted bad file per bad-record policy.
# ------------------------------------------------------------------------------------------------


def _craft_bad_records(root, make):
  """Adds one crafted file per bad-record case to a Challenge tree (`make` writes good ones)."""
  bad = root / "bad"
  x = make.fake_ecg_mv(5000, 500, 12, seed=9)
  d = np.round(x * 1000).astype(np.int16)
  leads = list(schema.LEAD_ORDER)
  comments = ["Age: 50", "Sex: Male", "Dx: 426783006"]

  def write(name, digital=d, fs=500, names=leads, header_comments=comments):
    make.write_challenge_record(bad, name, digital, fs, names, header_comments, use_mat=False)
    return bad / name

  p = write("T_truncated")
  p.with_suffix(".dat").write_bytes(p.with_suffix(".dat").read_bytes()[:5000])
  p = write("T_malformed")
  p.with_suffix(".hea").write_text("T_malformed twelve 500 5000\nnot a signal line\n")
  write("T_missing").with_suffix(".dat").unlink()
  nan_lead = d.copy()
  nan_lead[:, 4] = schema.INT16_NAN
  write("T_nanlead", nan_lead)
  flat = d.copy()
  flat[:, 6] = 42
  write("T_flat", flat)
  write("T_unknownleads", d[:, :3], names=["foo", "bar", "baz"])
  write("T_someunknown", d[:, :4], names=["I", "II", "lead_x", "V1"])
  write("T_short", d[:4000])
  p = write("T_fs0")
  p.with_suffix(".hea").write_text(
    p.with_suffix(".hea").read_text().replace("T_fs0 12 500 5000", "T_fs0 12 0 5000")
  )
  write("T_fs250", d, fs=250)  # 20 s at 250 Hz: resampled, kept.
  write("T_badmeta", header_comments=["Age: old", "Sex: robot", "Dx: 426783006,XYZ"])
  write("T_alldead", np.full_like(d, schema.INT16_NAN))
  # Duplicate record id: a good record's name again, in a folder that sorts after `georgia/`.
  make.write_challenge_record(root / "zz_copy", "E00001", d, 500, leads, comments, use_mat=False)


@pytest.fixture(scope="module")
def challenge_dummy(tmp_path_factory):
  root = tmp_path_factory.mktemp("challenge")
  make = build.dataset_module("physionet_challenge", "dummy_data_generation")
  make.write_dummy_data(root)
  _craft_bad_records(root, make)
  data_dir = tmp_path_factory.mktemp("tfds")
  report, sources = _build("physionet_challenge", data_dir, root)
  return report, _by_id(sources["train"]), root


def test_challenge_dummy_good_records(challenge_dummy):
  _, examples, root = challenge_dummy
  e = examples[("E00001", 0)]
  ref = wfdb.rdrecord(str(root / "georgia" / "E00001"))  # A .mat record.
  np.testing.assert_array_equal(_physical(e), ref.p_signal.astype(np.float32))
  assert [int(c) for c in e["dx"]] == [164889003, 59118001] and e["source"] == b"E"
  a = examples[("A0001", 0)]  # CPSC abbreviations, NaN age, 25 s -> first window only.
  assert [int(c) for c in a["dx"]] == [164889003, 270492004]
  assert np.isnan(a["age"]) and np.isnan(a["metadata"][1]) and a["sex"] == b"F"
  assert ("A0001", 1) not in examples
  i = examples[("I0001", 0)]  # 257 Hz, upper-case names.
  assert i["signal"].shape == (5000, 12) and i["lead_mask"].all() and i["sampling_rate"] == 500
  ref = wfdb.rdrecord(str(root / "incart" / "I0001")).p_signal
  expected = scipy.signal.resample_poly(ref, 500, 257, axis=0, padtype="line")[:5000]
  np.testing.assert_allclose(_physical(i), expected, atol=5e-4 + 1e-6)
  s = examples[("S0001", 0)]  # 1000 Hz, lower-case names plus Frank leads.
  assert s["lead_mask"].all() and s["sex"] == b"F"


def test_challenge_bad_records_are_counted(challenge_dummy):
  report, examples, _ = challenge_dummy
  skipped = {
    reason: [e["record_id"] for e in b["examples"]] for reason, b in report["skipped"].items()
  }
  assert skipped == {
    br.TRUNCATED_SIGNAL: ["T_truncated"],
    br.MALFORMED_HEADER: ["T_malformed"],
    br.MISSING_SIGNAL_FILE: ["T_missing"],
    br.NO_STANDARD_LEADS: ["T_unknownleads"],
    br.TOO_SHORT: ["T_short"],
    br.UNSUPPORTED_SAMPLING_RATE: ["T_fs0"],
    br.ALL_LEADS_MISSING: ["T_alldead"],
    br.DUPLICATE_RECORD: ["E00001"],
  }
  flags = {
    flag: {e["record_id"]: e["detail"] for e in b["examples"]}
    for flag, b in report["flags"].items()
  }
  assert flags[br.ALL_NAN_LEAD] == {"T_nanlead": "aVL"}
  assert flags[br.FLAT_LEAD] == {"T_flat": "V1"}
  assert flags[br.UNKNOWN_LEAD_NAME] == {"T_someunknown": "'lead_x'"}
  assert flags[br.RESAMPLED] == {
    "I0001": "257 Hz -> 500 Hz",
    "S0001": "1000 Hz -> 500 Hz",
    "T_fs250": "250 Hz -> 500 Hz",
  }
  assert flags[br.METADATA_UNPARSABLE] == {"T_badmeta": "age='old' sex='robot'"}
  assert flags[br.UNKNOWN_LABEL] == {"T_badmeta": "XYZ"}
  assert report["records"]["kept"] == 4 + 5  # 4 good + nanlead, flat, someunknown, fs250, badmeta
  assert report["records"]["skipped"] == 8
  # Flagged records are stored with the lead masked and NaN metadata where unparsable.
  assert examples[("T_nanlead", 0)]["lead_mask"].tolist() == [i != 4 for i in range(12)]
  assert examples[("T_flat", 0)]["lead_mask"].tolist() == [i != 6 for i in range(12)]
  assert examples[("T_someunknown", 0)]["lead_mask"].sum() == 3
  assert np.isnan(examples[("T_badmeta", 0)]["metadata"][:2]).all()
  assert [int(c) for c in examples[("T_badmeta", 0)]["dx"]] == [426783006]


def test_challenge_padded_config_keeps_short_records(tmp_path):
  make = build.dataset_module("physionet_challenge", "dummy_data_generation")
  digital = np.round(make.fake_ecg_mv(3000, 500, 12, seed=1) * 1000).astype(np.int16)
  make.write_challenge_record(
    tmp_path / "src",
    "Q0001",
    digital,
    500,
    list(schema.LEAD_ORDER),
    ["Age: 40", "Sex: F", "Dx: STD"],
    use_mat=True,
  )
  report, sources = _build(
    "physionet_challenge", tmp_path / "tfds", tmp_path / "src", config="first_window_padded"
  )
  (ex,) = list(sources["train"])
  assert ex["signal"].shape == (5000, 12) and ex["lead_mask"].all()
  np.testing.assert_array_equal(_physical(ex)[3000:], 0.0)
  np.testing.assert_array_equal(ex["signal"][:3000], digital)
  assert [int(c) for c in ex["dx"]] == [429622005]
  assert report["flags"][br.ZERO_PADDED]["examples"][0]["detail"] == "3000 -> 5000 samples"


def test_cli_reuse_overwrite_and_atomic_failure(tmp_path, capsys, monkeypatch):
  manual = _dummy("physionet_challenge", tmp_path / "src")
  data_dir = tmp_path / "tfds"
  argv = ["physionet_challenge", "--manual_dir", str(manual), "--data_dir", str(data_dir)]
  assert build.main(argv) == 0
  out = capsys.readouterr().out
  version_dir = data_dir / "physionet_challenge" / "first_window" / "1.0.0"
  assert f"report: {version_dir / br.REPORT_FILENAME}" in out
  assert "4 of 4 records kept" in out
  first = json.loads((version_dir / br.REPORT_FILENAME).read_text())["started_at"]

  assert build.main(argv) == 0
  assert "already built" in capsys.readouterr().out

  # A rebuild that dies mid-way (not a per-record error) leaves the old version untouched.
  class Boom(BaseException):
    pass

  def explode(*args, **kwargs):
    raise Boom()

  monkeypatch.setattr(windows, "cut_windows", explode)
  with pytest.raises(Boom):
    build.main(argv + ["--overwrite"])
  assert json.loads((version_dir / br.REPORT_FILENAME).read_text())["started_at"] == first
  assert sorted(p.name for p in version_dir.parent.iterdir()) == [
    "1.0.0",
    f"1.0.0.failed_{br.REPORT_FILENAME}",
  ]
  monkeypatch.undo()

  # A first build that fails leaves no version directory at all.
  with pytest.raises(Boom):
    monkeypatch.setattr(windows, "cut_windows", explode)
    build.build("physionet_challenge", data_dir=tmp_path / "other", manual_dir=manual)
  monkeypatch.undo()
  config_dir = tmp_path / "other" / "physionet_challenge" / "first_window"
  assert not [p for p in config_dir.iterdir() if not p.name.endswith(".json")]

  assert build.main(argv + ["--overwrite", "--config", "all_windows"]) == 0
  report = json.loads(
    (data_dir / "physionet_challenge" / "all_windows" / "1.0.0" / br.REPORT_FILENAME).read_text()
  )
  assert report["windows_per_record"] == {"1": 3, "2": 1}  # A0001 is 25 s long.


def test_build_report_counts_and_summary(tmp_path):
  report = br.BuildReport(dataset="d", config="c", version="1.0.0", max_examples=2)
  report.kept("a", 2, split="train")
  report.kept("b", 1, split="test")
  for rid in ("x", "y", "z"):
    report.skipped(br.TOO_SHORT, rid, "3 s")
  report.flagged_all("a", {br.FLAT_LEAD: "V1", br.RESAMPLED: "250 Hz -> 500 Hz"})
  report.filtered("not_first_record_of_patient", 4)
  d = json.loads(report.write(tmp_path / "r.json").read_text())
  assert d["records"] == {"seen": 5, "kept": 2, "skipped": 3, "filtered": 4}
  assert d["examples"] == {"test": 1, "train": 2} and d["examples_total"] == 3
  assert d["windows_per_record"] == {"1": 1, "2": 1}
  assert d["skipped"][br.TOO_SHORT] == {
    "count": 3,
    "examples": [{"record_id": "x", "detail": "3 s"}, {"record_id": "y", "detail": "3 s"}],
  }
  assert not list(tmp_path.glob("*.tmp"))
  text = br.summarize(d)
  assert "2 of 5 records kept, 3 skipped, 4 filtered" in text
  assert "skipped too_short: 3 (e.g. x, y)" in text


@pytest.mark.slow
def test_worker_processes_give_the_same_dataset(tmp_path):
  """`num_workers` only changes who reads: same examples, same report counts."""
  root = _dummy("physionet_challenge", tmp_path / "src")
  serial, a = _build("physionet_challenge", tmp_path / "a", root)
  parallel, b = _build("physionet_challenge", tmp_path / "b", root, num_workers=2)
  a, b = _by_id(a["train"]), _by_id(b["train"])
  assert a.keys() == b.keys()
  for key in a:
    for name in ("signal", "lead_mask", "metadata", "gain"):
      np.testing.assert_array_equal(a[key][name], b[key][name])
  assert serial["flags"] == parallel["flags"] and serial["records"] == parallel["records"]


@pytest.mark.slow
def test_cli_builds_synthetic_ecg_with_a_report(tmp_path, capsys):
  """The CLI resolves any `clef_jax/datasets/<name>/`; builders without a report get a minimal one."""
  assert build.main(["synthetic_ecg", "--config", "tiny", "--data_dir", str(tmp_path)]) == 0
  report_path = tmp_path / "synthetic_ecg" / "tiny" / "1.0.0" / br.REPORT_FILENAME
  assert f"report: {report_path}" in capsys.readouterr().out
  report = json.loads(report_path.read_text())
  assert report["examples_total"] == report["records"]["kept"] > 0


def test_unknown_dataset_name_lists_available():
  with pytest.raises(ValueError, match="ptbxl"):
    build.builder_class("no_such_dataset")
  assert {"mimic_iv_ecg", "physionet_challenge", "ptbxl"} <= set(build.available_datasets())


# ------------------------------------------------------------------------------------------------
# mimic_iv_ecg
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mimic_root(tmp_path_factory):
  root = _dummy("mimic_iv_ecg", tmp_path_factory.mktemp("mimic"))
  make = build.dataset_module("mimic_iv_ecg", "dummy_data_generation")
  return root, make


def test_mimic_all(mimic_root, tmp_path):
  root, make = mimic_root
  import pandas as pd

  from clef_jax.data import metadata as meta_lib

  report, sources = _build("mimic_iv_ecg", tmp_path, root, config="all")
  assert set(sources) == {"train", "validation"}
  train, val = _by_id(sources["train"]), _by_id(sources["validation"])
  assert {k[0] for k in val} == {"40000004"}
  assert len(train) == 5 and report["records"]["kept"] == 6
  meta_df = pd.read_csv(root / "mimiciv_metadata_with_score2.csv")
  expected_meta = np.asarray(meta_lib.metadata_from_mimic_frame(meta_df), np.float32)
  for (study, _), ex in train.items():
    subject = ex["patient_id"].decode()
    rel = make.record_path(int(subject), int(study))
    ref = wfdb.rdrecord(str(root / rel))
    assert ref.sig_name == list(make.MIMIC_LEADS)
    order = [schema.lead_index(n) for n in ref.sig_name]  # aVF (file col 4) -> LEAD_ORDER 5.
    assert order[4] == 5 and order[5] == 4
    np.testing.assert_array_equal(_physical(ex)[:, order], ref.p_signal.astype(np.float32))
    assert ex["path"].decode() == rel
    rows = np.flatnonzero(meta_df["study_id"] == int(study))
    if rows.size:
      np.testing.assert_array_equal(ex["metadata"], expected_meta[rows[0]])
    else:
      assert np.isnan(ex["metadata"]).all()
  assert report["flags"][br.METADATA_MISSING]["count"] == 2  # 40000004 and 40000006.


def test_mimic_one_per_patient_and_bad_rows(mimic_root, tmp_path):
  root, make = mimic_root
  # A copy with a duplicate list row, an unparsable metadata row and a missing record.
  src = tmp_path / "src"
  shutil.copytree(root, src)
  lines = (src / "record_list.csv").read_text().splitlines()
  lines.append(lines[1])  # Duplicate study 40000002.
  lines.append(
    "10000999,40000999,40000999,2180-01-01 00:00:00,files/p1000/p10000999/s40000999/40000999"
  )  # Listed, not on disk.
  (src / "record_list.csv").write_text("\n".join(lines) + "\n")
  meta = (src / "mimiciv_metadata_with_score2.csv").read_text().splitlines()
  meta = [m.replace("22.1", "twenty-two") if "40000005" in m else m for m in meta]
  (src / "mimiciv_metadata_with_score2.csv").write_text("\n".join(meta) + "\n")

  report, sources = _build("mimic_iv_ecg", tmp_path / "tfds", src, config="one_per_patient")
  train = _by_id(sources["train"])
  # Earliest record per subject: 40000001 (listed second) for 10000032, 40000005 for 10000764.
  assert sorted(k[0] for k in train) == ["40000001", "40000003", "40000005"]
  assert report["filtered"] == {"not_first_record_of_patient": 2}
  assert report["skipped"][br.DUPLICATE_RECORD]["examples"][0]["record_id"] == "40000002"
  assert report["skipped"][br.MISSING_HEADER]["examples"][0]["record_id"] == "40000999"
  bad = report["flags"].get(br.METADATA_UNPARSABLE)
  assert bad and bad["examples"][0]["record_id"] == "40000005", report["flags"]
  assert np.isnan(train[("40000005", 0)]["metadata"][2])  # BMI could not be parsed.


# ------------------------------------------------------------------------------------------------
# ptbxl
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("config, rate", [("100hz", 100), ("500hz", 500)])
def test_ptbxl(tmp_path, config, rate):
  root = _dummy("ptbxl", tmp_path / "src")
  module = build.dataset_module("ptbxl")
  report, sources = _build("ptbxl", tmp_path / "tfds", root, config=config)
  assert report["records"]["kept"] == 5 and report["examples"] == {
    "train": 3,
    "validation": 1,
    "test": 1,
  }
  ex = {k[0]: v for split in sources.values() for k, v in _by_id(split).items()}
  assert {k[0] for k in _by_id(sources["validation"])} == {"3"}
  assert {k[0] for k in _by_id(sources["test"])} == {"4"}
  vocab = module.VOCABULARIES
  assert [len(vocab[t]) for t in module.TASKS] == [44, 23, 5, 19, 12]

  def names(e, task):
    return [vocab[task][i] for i in np.flatnonzero(e[task])]

  two = ex["2"]  # {'IMI': 80, 'ASMI': 50, 'PVC': 100, 'AFIB': 0}
  assert names(two, "diagnostic") == ["ASMI", "IMI"]
  assert names(two, "subdiagnostic") == ["AMI", "IMI"]
  assert names(two, "superdiagnostic") == ["MI"]
  assert names(two, "form") == ["PVC"] and names(two, "rhythm") == ["AFIB"]
  assert two["age"] == 300 and two["metadata"][1] == 90 and two["sex"] == b"M"
  three = ex["3"]  # NDT is both diagnostic (STTC) and form.
  assert names(three, "diagnostic") == ["LVH", "NDT"] and names(three, "form") == ["NDT", "STD_"]
  assert names(three, "superdiagnostic") == ["HYP", "STTC"]
  assert np.isnan(ex["4"]["age"]) and ex["1"]["patient_id"] == ex["5"]["patient_id"] == b"101"
  for ecg_id, e in ex.items():
    assert e["sampling_rate"] == rate and e["signal"].shape == (10 * rate, 12)
    suffix = "lr" if rate == 100 else "hr"
    ref = wfdb.rdrecord(str(root / f"records{rate}" / "00000" / f"{int(ecg_id):05d}_{suffix}"))
    np.testing.assert_array_equal(_physical(e), ref.p_signal.astype(np.float32))
  # The vocabularies travel with the data (read-only builder, no code needed).
  info = tfds.builder_from_directory(str(tmp_path / "tfds" / "ptbxl" / config / "1.0.0")).info
  assert info.metadata["vocabularies"]["rhythm"] == list(vocab["rhythm"])


def test_ptbxl_bad_rows(tmp_path):
  root = _dummy("ptbxl", tmp_path / "src")
  db = root / "ptbxl_database.csv"
  header = db.read_text().splitlines()[0].split(",")
  rows = list(csv.DictReader(io.StringIO(db.read_text())))
  extra = [
    dict(rows[0], ecg_id="6", strat_fold=""),  # No fold.
    dict(
      rows[0],
      ecg_id="7",
      filename_lr="records100/00000/00007_lr",
      filename_hr="records500/00000/00007_hr",
    ),  # Not on disk.
    dict(rows[0], ecg_id="8", scp_codes="{'NORM': 100.0, 'XYZ': 50.0}"),
    dict(rows[0], ecg_id="1", strat_fold="10"),
  ]  # Duplicate id.
  with db.open("w", newline="") as f:
    writer = csv.DictWriter(f, header)
    writer.writeheader()
    writer.writerows(rows + extra)
  report, sources = _build("ptbxl", tmp_path / "tfds", root, config="100hz")
  skipped = {k: [e["record_id"] for e in v["examples"]] for k, v in report["skipped"].items()}
  assert skipped == {br.INVALID_ENTRY: ["6"], br.MISSING_HEADER: ["7"], br.DUPLICATE_RECORD: ["1"]}
  assert report["flags"][br.UNKNOWN_LABEL]["examples"] == [{"record_id": "8", "detail": "XYZ"}]
  assert report["records"]["kept"] == 6


@pytest.mark.parametrize("name", ["ptbxl", "music_scd"])
def test_dummy_data_scripts_extra_records(tmp_path, name):
  script = [sys.executable, "-m", f"clef_jax.datasets.{name}.dummy_data_generation"]
  # This checkout's clef_jax, whichever one is installed.
  env = dict(os.environ, PYTHONPATH=str(pathlib.Path(__file__).resolve().parents[1]))
  out = subprocess.run(
    [*script, f"--out_dir={tmp_path / 'cli'}", "--extra=7"],
    capture_output=True,
    text=True,
    timeout=120,
    env=env,
  )
  assert out.returncode == 0, out.stderr[-2000:]
  module = build.dataset_module(name, "dummy_data_generation")
  module.write_dummy_data(tmp_path / "fn", extra=7)
  module.write_dummy_data(tmp_path / "plain")
  tree = lambda root: {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file()}
  cli, fn, plain = tree(tmp_path / "cli"), tree(tmp_path / "fn"), tree(tmp_path / "plain")
  assert cli == fn
  # The extra records are added; the plain tree's record files are unchanged.
  assert set(plain) < set(fn) and all(fn[k] == v for k, v in plain.items() if k.suffix != ".csv")
  bad = subprocess.run(
    [*script, f"--out_dir={tmp_path / 'x'}", "--extra=-1"],
    capture_output=True,
    text=True,
    timeout=120,
    env=env,
  )
  assert bad.returncode == 2 and "--extra must be >= 0" in bad.stderr


@pytest.mark.parametrize(
  "name",
  [
    "aurora_bp",
    "chapman",
    "icentia11k",
    "mc_med",
    "mimic_iv_ecg",
    "mimic_iv_lvef",
    "music_scd",
    "physionet_challenge",
    "ptbxl",
  ],
)
def test_dummy_data_scripts_write_the_same_tree_as_the_function(tmp_path, name):
  script = [sys.executable, "-m", f"clef_jax.datasets.{name}.dummy_data_generation"]
  out = subprocess.run(
    [*script, f"--out_dir={tmp_path / 'cli'}"], capture_output=True, text=True, timeout=120
  )
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.strip() == str(tmp_path / "cli")
  _dummy(name, tmp_path / "fn")
  tree = lambda root: {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file()}
  cli, fn = tree(tmp_path / "cli"), tree(tmp_path / "fn")
  assert cli and cli == fn
  missing = subprocess.run(script, capture_output=True, text=True, timeout=120)
  assert missing.returncode == 2 and "--out_dir" in missing.stderr
