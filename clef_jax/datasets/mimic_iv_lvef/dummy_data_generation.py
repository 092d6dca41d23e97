r"""Writes a miniature MIMIC-IV-ECG tree with an ECGFounder-style `LVEF.csv` for tests.

    python -m clef_jax.datasets.mimic_iv_lvef.dummy_data_generation --out_dir /tmp/mimic_lvef

The six records of the `mimic_iv_ecg` dummy tree (same layout and metadata CSV) plus `LVEF.csv`
with ECGFounder's columns `subject_id, waveform_path, LVEF, class` (`class` = 1 for LVEF >= 50):
ten rows, so rows 0-7 are train, 8 validation and 9 test. Planted: row 4 repeats row 0's path,
row 5 has no path, row 6 neither LVEF nor class, row 7 names a record that does not exist; row 2
has LVEF 120 (out of range), row 3 no LVEF but a class.

`extra=N` appends N more rows, each with a record of its own (subject 11000000 + k, study
41000000 + k; for running the evaluation on the tree): row k has LVEF 30-39 % (class 0) for even
k and 55-64 % (class 1) for odd k, so with N >= 20 the validation and test rows (the last 20 %)
hold both classes; the record's beat rate follows the class, so the labels are learnable.
"""

from __future__ import annotations

import csv
import pathlib

import numpy as np

from clef_jax import build

COLUMNS = ("subject_id", "waveform_path", "LVEF", "class")


def rows() -> list[tuple]:
  mimic = build.dataset_module("mimic_iv_ecg", "dummy_data_generation")
  path = {study: mimic.record_path(subject, study) for subject, study, _ in mimic.RECORDS}
  subject = {study: subject for subject, study, _ in mimic.RECORDS}

  def row(study, lvef, cls):
    return (subject[study], path[study], lvef, cls)

  return [
    row(40000001, "55.0", "1"),
    row(40000002, "35.0", "0"),
    row(40000003, "120", "1"),
    row(40000004, "", "0"),  # No LVEF, class only.
    row(40000001, "60", "1"),  # Path listed before.
    (10000117, "", "50", "1"),  # No path.
    row(40000005, "", ""),  # No label.
    (10009999, "files/p1000/p10009999/s49999999/49999999", "30", "0"),  # No such record.
    row(40000005, "62.5", "1"),
    row(40000006, "45.5", "0"),
  ]


def extra_rows(extra: int) -> list[tuple]:
  """The `extra` rows (module docstring)."""
  mimic = build.dataset_module("mimic_iv_ecg", "dummy_data_generation")
  out = []
  for k in range(extra):
    subject, study = 11000000 + k, 41000000 + k
    lvef = 55 + k % 10 if k % 2 else 30 + k % 10
    out.append((subject, mimic.record_path(subject, study), f"{lvef}.0", str(k % 2)))
  return out


def extra_record_mv(k: int) -> np.ndarray:
  """`(5000, 12)` float mV of extra row k: beats at 1.0 Hz (class 0) or 1.6 Hz (class 1)."""
  rng = np.random.default_rng(k)
  t = np.arange(5000) / 500.0
  beat = np.exp(-(((t * (1.6 if k % 2 else 1.0)) % 1.0 - 0.35) ** 2) / 0.0015)
  return beat[:, None] * rng.uniform(0.3, 1.2, 12) + rng.normal(0, 0.01, (5000, 12))


def write_dummy_data(out_dir: str | pathlib.Path, extra: int = 0) -> pathlib.Path:
  """Writes the tree (plus `extra` rows, module docstring) under `out_dir` and returns it."""
  import wfdb  # Lazy.

  mimic = build.dataset_module("mimic_iv_ecg", "dummy_data_generation")
  out_dir = pathlib.Path(out_dir)
  mimic.write_dummy_data(out_dir)
  more = extra_rows(extra)
  for k, (_, path, _, _) in enumerate(more):
    folder = out_dir / path.rsplit("/", 1)[0]
    folder.mkdir(parents=True, exist_ok=True)
    wfdb.wrsamp(
      path.rsplit("/", 1)[1],
      fs=500,
      units=["mV"] * 12,
      sig_name=list(mimic.MIMIC_LEADS),
      p_signal=extra_record_mv(k),
      fmt=["16"] * 12,
      adc_gain=[200.0] * 12,
      baseline=[0] * 12,
      write_dir=str(folder),
    )
  with (out_dir / "LVEF.csv").open("w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(COLUMNS)
    writer.writerows(rows() + more)
  return out_dir


if __name__ == "__main__":
  import sys  # pylint: disable=g-import-not-at-top

  sys.exit(build.dummy_data_main(write_dummy_data))
