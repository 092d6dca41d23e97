"""Each builder on its committed `dummy_data/` (TFDS's convention): split sizes and one record.

The trees are what each builder's `dummy_data_generation.py` writes (checked byte for byte), in the
dataset's published on-disk layout. A record's expected fields are the values in those files (the
CSV / TSV rows and WFDB headers quoted beside each entry), and its signal is compared with
`wfdb.rdrecord` of the same file. Policy rows, bad files and the real PhysioNet records are tested
in `builders_test.py` and the per-builder test files.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
from typing import Any

import numpy as np
import pytest

from clef_jax import build

tfds = pytest.importorskip("tensorflow_datasets")
wfdb = pytest.importorskip("wfdb")

# The stored lead order (the 12-lead standard order), written out here rather than imported.
LEADS = ("I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6")


@dataclasses.dataclass(frozen=True)
class Spec:
  splits: dict[str, int]
  record: str  # record_id of the record checked
  fields: dict[str, Any]  # its scalar fields, as the raw files give them
  config: str | None = None
  wfdb_record: str | None = None  # its WFDB file (relative to dummy_data/): the signal
  fs: float = 500.0


SPECS = {
  # participants.tsv `a010 ... M`; features.tsv `a010 initial Calibration_start_1 145.0 85.0`.
  "aurora_bp": Spec(
    {"train": 6, "validation": 1, "test": 2},
    "a010",
    {"patient_id": "a010", "baseline_sbp": 145.0, "baseline_dbp": 85.0},
    config="auscultatory",
  ),
  # chapman_test.csv `.../JS00005.mat,66,"SR,STTU",...`; the header's `#Dx: 426783006,164931005`.
  "chapman": Spec(
    {"train": 2, "validation": 1, "test": 2},
    "JS00005",
    {"age": 66.0, "diagnose": "SR,STTU", "sex": "M"},
    wfdb_record="WFDBRecords/01/010/JS00005",
  ),
  # p00000_s00.atr: an `S` beat at sample 2000 of a 250-Hz segment (10-s window from 750).
  "icentia11k": Spec(
    {"train": 3, "validation": 1, "test": 4},
    "p00000_s00:S",
    {
      "patient_id": "p00000",
      "segment": "p00000_s00",
      "label_name": "S",
      "sample": 2000,
      "start": 750,
    },
    config="beat",
    fs=250.0,
  ),
  # visits.csv `10000306,505,48,F,...,100,65,3-Urgent,...,Discharge,Jail/Prison`.
  "mc_med": Spec(
    {"train": 3, "validation": 1, "test": 2},
    "10000306",
    {
      "patient_id": "505",
      "triage_sbp": 100.0,
      "triage_dbp": 65.0,
      "triage_acuity_text": "3-Urgent",
      "ed_dispo_text": "Discharge",
      "dc_dispo_text": "Jail/Prison",
    },
  ),
  # record_list.csv: study 40000003 of subject 10000117.
  "mimic_iv_ecg": Spec(
    {"train": 5, "validation": 1},
    "40000003",
    {"patient_id": "10000117", "path": "files/p1000/p10000117/s40000003/40000003"},
    config="all",
    wfdb_record="files/p1000/p10000117/s40000003/40000003",
  ),
  # LVEF.csv `10000764,files/p1000/p10000764/s40000006/40000006,45.5,0`.
  "mimic_iv_lvef": Spec(
    {"train": 4, "validation": 1, "test": 1},
    "40000006",
    {"patient_id": "10000764", "lvef": 45.5, "lvef_class_csv": 0},
    config="csv_class",
    wfdb_record="files/p1000/p10000764/s40000006/40000006",
  ),
  # subject-info.csv `P0011;60;0;40,5;1;3;6;1100` (exit 3 = SCD, cause of death 6).
  "music_scd": Spec(
    {"train": 6, "validation": 1, "test": 2},
    "P0011",
    {"patient_id": "P0011", "cause_of_death": 6, "channel_name": "X"},
    fs=200.0,
  ),
  # georgia/E00001.hea `# Age: 63`, `# Sex: Male` (500 Hz, 12 leads, a .mat signal).
  "physionet_challenge": Spec(
    {"train": 4},
    "E00001",
    {"age": 63.0, "sex": "M", "source": "E"},
    config="first_window",
    wfdb_record="georgia/E00001",
  ),
  # ptbxl_database.csv `4,104.0,,1,...,10,records100/00000/00004_lr,...` (age blank, sex 1 = F).
  "ptbxl": Spec(
    {"train": 3, "validation": 1, "test": 1},
    "4",
    {"patient_id": "104", "age": math.nan, "sex": "F", "strat_fold": 10},
    config="100hz",
    wfdb_record="records100/00000/00004_lr",
    fs=100.0,
  ),
}


def _dummy_dir(name: str) -> pathlib.Path:
  return build.DATASETS_DIR / name / "dummy_data"


def _tree(root: pathlib.Path) -> dict[pathlib.Path, bytes]:
  return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_every_archive_builder_has_committed_dummy_data():
  archive_builders = {
    n
    for n in build.available_datasets()
    if (build.DATASETS_DIR / n / "dummy_data_generation.py").is_file()
  }
  assert archive_builders == set(SPECS)
  for name in SPECS:
    size = sum(len(b) for b in _tree(_dummy_dir(name)).values())
    assert 0 < size < 1_000_000, f"{name}/dummy_data is {size} bytes"


@pytest.mark.parametrize("name", sorted(SPECS))
def test_committed_dummy_data_is_what_the_generator_writes(name, tmp_path):
  build.dataset_module(name, "dummy_data_generation").write_dummy_data(tmp_path / name)
  assert _tree(_dummy_dir(name)) == _tree(tmp_path / name), (
    f"regenerate with: python -m clef_jax.datasets.{name}.dummy_data_generation "
    f"--out_dir clef_jax/datasets/{name}/dummy_data"
  )


def _value(x):
  return x.decode() if isinstance(x, bytes) else x


@pytest.mark.parametrize("name", sorted(SPECS))
def test_builds_from_committed_dummy_data(name, tmp_path):
  spec = SPECS[name]
  build.build(name, data_dir=tmp_path, config=spec.config, manual_dir=_dummy_dir(name))
  builder = build.builder_class(name)(data_dir=str(tmp_path), config=spec.config)
  assert {s: builder.info.splits[s].num_examples for s in builder.info.splits} == spec.splits
  sources = {s: builder.as_data_source(split=s) for s in spec.splits}
  assert {s: len(src) for s, src in sources.items()} == spec.splits

  matches = [
    ex for src in sources.values() for ex in src if ex["record_id"].decode() == spec.record
  ]
  assert matches, f"no record {spec.record}"
  ex = matches[0]
  assert set(ex) == set(builder.info.features)
  for key, expected in spec.fields.items():
    got = _value(ex[key])
    if isinstance(expected, float) and math.isnan(expected):
      assert math.isnan(got), key
    else:
      assert got == expected, key
  assert float(ex["sampling_rate"]) == spec.fs
  signal = np.asarray(ex["signal"])
  assert signal.dtype == np.int16 and signal.ndim == 2 and signal.shape[1] == len(LEADS)
  assert np.asarray(ex["lead_mask"]).shape == (len(LEADS),)

  if spec.wfdb_record:
    ref = wfdb.rdrecord(str(_dummy_dir(name) / spec.wfdb_record))
    assert ref.fs == spec.fs
    mv = (signal.astype(np.float64) - np.asarray(ex["baseline"])) / np.asarray(ex["gain"])
    n = signal.shape[0]
    for channel, lead in enumerate(ref.sig_name):
      i = LEADS.index(lead.upper())
      assert ex["lead_mask"][i], lead
      np.testing.assert_allclose(
        mv[:, i],
        ref.p_signal[:n, channel],
        rtol=0,
        atol=1e-4,
        err_msg=f"{name} {spec.record} lead {lead}",
      )
