r"""Writes a miniature MIMIC-IV-ECG v1.0 tree for tests.

    python -m clef_jax.datasets.mimic_iv_ecg.dummy_data_generation --out_dir /tmp/mimic

Six records of four subjects (two have two records each, one listed out of time order; subject
10000153 hashes to `validation`), each `files/pNNNN/pNNNNNNNN/sNNNNNNNN/NNNNNNNN.{hea,dat}` with
MIMIC's header lead order (aVF before aVL), 500 Hz, 5000 samples, format 16, gain 200/mV; plus
`record_list.csv` and a `mimiciv_metadata_with_score2.csv` with the official column names
(docs/method.md §D), keyed by `path`.
"""

from __future__ import annotations

import csv
import pathlib

import numpy as np

# MIMIC-IV-ECG header order: aVF comes before aVL.
MIMIC_LEADS = ("I", "II", "III", "aVR", "aVF", "aVL", "V1", "V2", "V3", "V4", "V5", "V6")
RECORD_LIST_COLUMNS = ("subject_id", "study_id", "file_name", "ecg_time", "path")
METADATA_COLUMNS = (
  "path",
  "subject_id",
  "study_id",
  "gender",
  "anchor_age",
  "age_at_ecg",
  "BMI (kg/m2)",
  "Blood Pressure",
  "Height (Inches)",
  "Weight (Lbs)",
  "heart_rate",
  "heart_rate_var",
  "rate_meta",
  "score2_risk",
)
# (subject_id, study_id, ecg_time); subject 10000032's later record is listed first.
RECORDS = (
  (10000032, 40000002, "2180-08-06 09:07:00"),
  (10000032, 40000001, "2180-07-23 08:44:00"),
  (10000117, 40000003, "2181-02-01 10:00:00"),
  (10000153, 40000004, "2189-10-12 12:30:00"),  # Hashes to `validation`.
  (10000764, 40000005, "2132-10-14 23:30:00"),
  (10000764, 40000006, "2132-10-15 07:00:00"),
)
# Metadata rows (gender, anchor_age, age_at_ecg, BMI, BP, height, weight, hr, hrv, rate, risk)
METADATA = {
  40000001: ("M", 52, 52, 27.5, "128/82", 70, 190, 72, 41.0, 1.0, 0.043),
  40000002: ("M", 52, 52, 27.9, "131/85", 70, 193, 75, 38.0, 1.0, 0.047),
  40000003: ("F", 68, 68, "", "142/90", "", "", 64, 25.0, 0.6, 0.081),
  40000005: ("F", 45, 45, 22.1, "", 64, 128, "", "", 0.5, ""),
}


def record_path(subject_id: int, study_id: int) -> str:
  """`files/p1000/p10000032/s40000001/40000001` (no extension)."""
  s = str(subject_id)
  return f"files/p{s[:4]}/p{s}/s{study_id}/{study_id}"


def record_mv(study_id: int) -> np.ndarray:
  """`(5000, 12)` float mV in `MIMIC_LEADS` order; lead k is distinguishable by its offset."""
  t = np.arange(5000) / 500.0
  beat = np.exp(-(((t * 1.1) % 1.0 - 0.35) ** 2) / 0.0015)
  k = np.arange(12)
  return beat[:, None] * (0.3 + 0.1 * k) + 0.01 * (k - 6) + 0.001 * (study_id % 97)


def write_dummy_data(out_dir: str | pathlib.Path) -> pathlib.Path:
  """Writes the tree under `out_dir` and returns it."""
  import wfdb  # Lazy.

  out_dir = pathlib.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  with (out_dir / "record_list.csv").open("w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(RECORD_LIST_COLUMNS)
    for subject, study, time in RECORDS:
      path = record_path(subject, study)
      writer.writerow((subject, study, study, time, path))
      folder = out_dir / path.rsplit("/", 1)[0]
      folder.mkdir(parents=True, exist_ok=True)
      wfdb.wrsamp(
        str(study),
        fs=500,
        units=["mV"] * 12,
        sig_name=list(MIMIC_LEADS),
        p_signal=record_mv(study),
        fmt=["16"] * 12,
        adc_gain=[200.0] * 12,
        baseline=[0] * 12,
        write_dir=str(folder),
      )
  with (out_dir / "mimiciv_metadata_with_score2.csv").open("w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(METADATA_COLUMNS)
    for subject, study, _ in RECORDS:
      if study in METADATA:
        writer.writerow((record_path(subject, study), subject, study) + METADATA[study])
  return out_dir


if __name__ == "__main__":
  import sys  # pylint: disable=g-import-not-at-top

  from clef_jax import build  # pylint: disable=g-import-not-at-top

  sys.exit(build.dummy_data_main(write_dummy_data))
