r"""Writes a miniature MIMIC-IV-ECG tree with an ECGFounder-style `LVEF.csv` for tests.

    python -m clef_jax.datasets.mimic_iv_lvef.dummy_data_generation --out_dir /tmp/mimic_lvef

The six records of the `mimic_iv_ecg` dummy tree (same layout and metadata CSV) plus `LVEF.csv`
with ECGFounder's columns `subject_id, waveform_path, LVEF, class` (`class` = 1 for LVEF >= 50):
ten rows, so rows 0-7 are train, 8 validation and 9 test. Planted: row 4 repeats row 0's path,
row 5 has no path, row 6 neither LVEF nor class, row 7 names a record that does not exist; row 2
has LVEF 120 (out of range), row 3 no LVEF but a class.
"""

from __future__ import annotations

import csv
import pathlib

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


def write_dummy_data(out_dir: str | pathlib.Path) -> pathlib.Path:
  """Writes the tree under `out_dir` and returns it."""
  out_dir = pathlib.Path(out_dir)
  build.dataset_module("mimic_iv_ecg", "dummy_data_generation").write_dummy_data(out_dir)
  with (out_dir / "LVEF.csv").open("w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(COLUMNS)
    writer.writerows(rows())
  return out_dir


if __name__ == "__main__":
  import sys  # pylint: disable=g-import-not-at-top

  sys.exit(build.dummy_data_main(write_dummy_data))
