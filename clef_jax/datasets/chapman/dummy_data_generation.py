r"""Writes a miniature ecg-arrhythmia 1.0.0 tree plus HeartLang-style split CSVs, for tests.

    python -m clef_jax.datasets.chapman.dummy_data_generation --out_dir /tmp/chapman

`WFDBRecords/01/010/JS0000N.{hea,mat}` (500 Hz, 12 leads, `.mat` in WFDB format `16+24`, gain
1000/mV, `#Age:` / `#Sex:` / `#Dx:` comments as in the archive) and `chapman_{train,val,test}.csv`
with HeartLang's columns. Cases the builder must handle:

- JS00001-JS00005: valid, listed once (train 2, validation 1, test 2);
- JS00006: valid but in no CSV (filtered `not_in_split`);
- JS00007: 5 s long (skipped `too_short`);
- JS00001 listed again in the test CSV (skipped `duplicate_record_id`);
- JS00099 listed but absent (skipped `missing_header`);
- JS00008 listed with a label cell `x` (skipped `invalid_list_entry`).

`extra=N` adds N more valid records `JS01000`... (for running the evaluation on the tree): record
k is listed in the train (k mod 5 < 3), val (k mod 5 = 3) or test (k mod 5 = 4) CSV with the
labels `EXTRA_LABELS[(k // 5) mod 6]`, so every split holds every one of those labels and records
without them (the beat rate follows the label set, so the labels are learnable).
"""

from __future__ import annotations

import csv
import pathlib

import numpy as np

from clef_jax import build
from clef_jax.data import schema

# (record, seconds, age, sex, SNOMED Dx, split file or None, HeartLang labels)
RECORDS = (
  ("JS00001", 10.0, "85", "Male", "164889003,59118001", "train", ("AFIB", "RBBB")),
  ("JS00002", 10.0, "59", "Female", "426177001,164934002", "train", ("TWC",)),
  ("JS00003", 10.0, "20", "Male", "426783006", "val", ("SR",)),
  ("JS00004", 10.0, "NaN", "Female", "427084000,39732003", "test", ("ST", "ALS")),
  ("JS00005", 10.0, "66", "Male", "426783006,164931005", "test", ("SR", "STTU")),
  ("JS00006", 10.0, "70", "Female", "426783006", None, ("SR",)),
  ("JS00007", 5.0, "44", "Male", "426783006", "train", ("SR",)),
)
# Extra CSV rows: (split file, ecg_path, label override)
EXTRA_ROWS = (
  ("test", "/chapman/WFDBRecords/01/010/JS00001.mat", None),
  ("val", "/chapman/WFDBRecords/01/010/JS00099.mat", None),
  ("train", "/chapman/WFDBRecords/01/010/JS00008.mat", "x"),
)
SUBDIR = "WFDBRecords/01/010"
# Label sets of the `extra` records, with their SNOMED codes for the header's `Dx`.
EXTRA_LABELS = (("SR",), ("AFIB",), ("ST",), ("SR", "TWC"), ("AFIB", "RBBB"), ("ST", "LVH"))
SNOMED = {
  "SR": "426783006",
  "AFIB": "164889003",
  "ST": "427084000",
  "TWC": "164934002",
  "RBBB": "59118001",
  "LVH": "164873001",
}
EXTRA_SPLITS = ("train", "train", "train", "val", "test")


def extra_records(extra: int) -> tuple[tuple, ...]:
  """The `extra` records' rows, as `RECORDS` (module docstring)."""
  rows = []
  for k in range(extra):
    labels = EXTRA_LABELS[(k // 5) % len(EXTRA_LABELS)]
    rows.append(
      (
        f"JS{1000 + k:05d}",
        10.0,
        str(30 + k % 50),
        ("Male", "Female")[k % 2],
        ",".join(SNOMED[name] for name in labels),
        EXTRA_SPLITS[k % 5],
        labels,
      )
    )
  return tuple(rows)


def _row(ecg_path: str, age: str, labels, override: str | None = None) -> list[str]:
  cells = [override if override is not None else str(int(name in labels)) for name in _labels()]
  return [ecg_path, age, ",".join(labels), *cells]


def _labels():
  return build.dataset_module("chapman").LABELS


def write_dummy_data(out_dir: str | pathlib.Path, extra: int = 0) -> pathlib.Path:
  """Writes the tree (plus `extra` records, module docstring) under `out_dir` and returns it."""
  challenge = build.dataset_module("physionet_challenge", "dummy_data_generation")
  module = build.dataset_module("chapman")
  out_dir = pathlib.Path(out_dir)
  rows = {"train": [], "val": [], "test": []}
  for seed, (name, seconds, age, sex, dx, split, labels) in enumerate(
    RECORDS + extra_records(extra)
  ):
    # `fake_ecg_mv` beats at 1.2 Hz of its `fs`; extra records beat at 1.0-2.0 Hz by label set.
    rate = 1.2 if seed < len(RECORDS) else 1.0 + 0.2 * EXTRA_LABELS.index(labels)
    x = challenge.fake_ecg_mv(int(seconds * 500), 500 * 1.2 / rate, schema.NUM_LEADS, seed + 10)
    challenge.write_challenge_record(
      out_dir / SUBDIR,
      name,
      np.round(x * 1000).astype(np.int16),
      500,
      list(schema.LEAD_ORDER),
      [f"Age: {age}", f"Sex: {sex}", f"Dx: {dx}", "Rx: Unknown", "Hx: Unknown", "Sx: Unknown"],
      use_mat=True,
      mat_format="16+24",
      gain_baseline=False,
      comment_prefix="#",
    )
    if split:
      rows[split].append(_row(f"/chapman/{SUBDIR}/{name}.mat", age, labels))
  for split, path, override in EXTRA_ROWS:
    rows[split].append(_row(path, "50", ("SR",), override))
  for split, split_rows in rows.items():
    with (out_dir / f"chapman_{split}.csv").open("w", newline="") as f:
      writer = csv.writer(f)
      writer.writerow(module.LEADING_COLUMNS + module.LABELS)
      writer.writerows(split_rows)
  return out_dir


if __name__ == "__main__":
  import sys  # pylint: disable=g-import-not-at-top

  sys.exit(build.dummy_data_main(write_dummy_data))
