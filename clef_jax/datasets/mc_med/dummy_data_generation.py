r"""Writes a miniature MC-MED 1.0.1 tree for tests.

    python -m clef_jax.datasets.mc_med.dummy_data_generation --out_dir /tmp/mc_med

`visits.csv` and `waveform_summary.csv` (MC-MED column names), `split_chrono_{train,val,test}.csv`
(one CSN per line, no header) and `waveforms/<last 3>/<CSN>/II/<CSN>_1.{hea,dat}` (lead II, format
16). Cases (CSN: what the builder must do):

- 10000101, 10000102, 10000203, 10000204, 10000305, 10000306: kept (10000102 is 8 s long: padded;
  10000204 is at 250 Hz: resampled; 10000203 has no triage BP; 10000305's `ED_dispo` is not one
  of the four classes: class 0, flagged);
- 10000407: `II_n_segments` 0 (skipped `missing_lead`);
- 10000408: `II_n_segments` 2 but no files (skipped `missing_header`);
- 10000509: no label at all (skipped `missing_label`);
- 10000510: flat lead II (skipped `all_leads_missing`);
- 10000611: in a split file but not in `visits.csv` (skipped `invalid_list_entry`);
- 10000101 listed again in the test split (skipped `duplicate_record_id`);
- 10000712: in `visits.csv` only (filtered `not_in_split`).

`extra=N` adds N more valid visits `20001000`... (for running the evaluation on the tree): visit
k is in the train (k mod 5 < 3), val (k mod 5 = 3) or test (k mod 5 = 4) split, and with
j = k // 5 its `ED_dispo`, `DC_dispo` and `Triage_acuity` are `EXTRA_ED[j mod 4]`,
`EXTRA_DC[j mod 6]` and `EXTRA_ACUITY[j mod 5]`, so ten visits of a split hold every class of
the three tasks; its triage BP and beat rate follow j, so the targets are learnable.
"""

from __future__ import annotations

import csv
import pathlib

import numpy as np

VISIT_COLUMNS = (
  "CSN",
  "MRN",
  "Age",
  "Gender",
  "Race",
  "Ethnicity",
  "Means_of_arrival",
  "Triage_Temp",
  "Triage_HR",
  "Triage_RR",
  "Triage_SpO2",
  "Triage_SBP",
  "Triage_DBP",
  "Triage_acuity",
  "CC",
  "ED_dispo",
  "DC_dispo",
  "Arrival_time",
)
SUMMARY_COLUMNS = (
  "CSN",
  "II_duration",
  "II_n_segments",
  "Pleth_duration",
  "Pleth_n_segments",
  "Resp_duration",
  "Resp_n_segments",
)
# CSN -> (MRN, age, gender, SBP, DBP, acuity, ED_dispo, DC_dispo, split, II_n_segments,
#         signal (seconds, fs, flat) or None)
VISITS = {
  "10000101": (
    "501",
    "64",
    "F",
    "120",
    "80",
    "3-Urgent",
    "Discharge",
    "Home/Work",
    "train",
    1,
    (12.0, 500, False),
  ),
  "10000102": (
    "502",
    "71",
    "M",
    "150",
    "95",
    "2-Emergent",
    "Inpatient",
    "Skilled Nursing Facility",
    "train",
    1,
    (8.0, 500, False),
  ),
  "10000203": (
    "503",
    "90",
    "F",
    "",
    "",
    "1-Resuscitation",
    "ICU",
    "Expired",
    "train",
    2,
    (10.0, 500, False),
  ),
  "10000204": (
    "502",
    "71",
    "M",
    "130",
    "70",
    "4-Semi-Urgent",
    "Observation",
    "Acute Care Hospital",
    "val",
    1,
    (20.0, 250, False),
  ),
  "10000305": (
    "504",
    "35",
    "M",
    "110",
    "60",
    "5-Non-Urgent",
    "Left without being seen",
    "Psychiatric Hospital",
    "test",
    1,
    (11.0, 500, False),
  ),
  "10000306": (
    "505",
    "48",
    "F",
    "100",
    "65",
    "3-Urgent",
    "Discharge",
    "Jail/Prison",
    "test",
    3,
    (10.0, 500, False),
  ),
  "10000407": (
    "506",
    "52",
    "M",
    "140",
    "90",
    "3-Urgent",
    "Discharge",
    "Home/Work",
    "test",
    0,
    None,
  ),
  "10000408": (
    "507",
    "60",
    "F",
    "125",
    "85",
    "2-Emergent",
    "Inpatient",
    "Home/Work",
    "train",
    2,
    None,
  ),
  "10000509": ("508", "33", "F", "", "", "", "", "", "val", 1, (10.0, 500, False)),
  "10000510": (
    "509",
    "77",
    "M",
    "135",
    "75",
    "3-Urgent",
    "Discharge",
    "Home/Work",
    "train",
    1,
    (10.0, 500, True),
  ),
  "10000712": (
    "510",
    "41",
    "F",
    "118",
    "77",
    "3-Urgent",
    "Discharge",
    "Home/Work",
    None,
    1,
    (10.0, 500, False),
  ),
}
EXTRA_SPLIT_ROWS = (("train", "10000611"), ("test", "10000101"))
# Label values of the `extra` visits: one per class of each task (`DC_dispo`: one per group).
EXTRA_ED = ("Discharge", "Inpatient", "Observation", "ICU")
EXTRA_DC = (
  "Home/Work",
  "Skilled Nursing Facility",
  "Acute Care Hospital",
  "Hospice/Medical Facility",
  "Psychiatric Hospital",
  "Jail/Prison",
)
EXTRA_ACUITY = ("1-Resuscitation", "2-Emergent", "3-Urgent", "4-Semi-Urgent", "5-Non-Urgent")
EXTRA_SPLITS = ("train", "train", "train", "val", "test")


def extra_visits(extra: int) -> dict[str, tuple]:
  """The `extra` visits, as `VISITS` (module docstring)."""
  out = {}
  for k in range(extra):
    j = k // 5
    out[str(20001000 + k)] = (
      str(1000 + k),
      str(30 + k % 50),
      "FM"[k % 2],
      str(100 + 4 * (j % 10)),
      str(60 + 3 * (j % 10)),
      EXTRA_ACUITY[j % 5],
      EXTRA_ED[j % 4],
      EXTRA_DC[j % 6],
      EXTRA_SPLITS[k % 5],
      1,
      (10.0, 500, False),
    )
  return out


def lead_ii_mv(n: int, fs: float, seed: int, rate: float = 1.3) -> np.ndarray:
  """`(n, 1)` float mV: a beat-like waveform (`rate` beats per second) with noise."""
  rng = np.random.default_rng(seed)
  t = np.arange(n) / fs
  x = 1.2 * np.exp(-(((t * rate) % 1.0 - 0.4) ** 2) / 0.0006) + 0.15 * np.sin(2 * np.pi * 0.25 * t)
  return (x + rng.normal(0, 0.01, n))[:, None]


def write_dummy_data(out_dir: str | pathlib.Path, extra: int = 0) -> pathlib.Path:
  """Writes the tree (plus `extra` visits, module docstring) under `out_dir` and returns it."""
  import wfdb  # Lazy.

  out_dir = pathlib.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  splits = {"train": [], "val": [], "test": []}
  with (
    (out_dir / "visits.csv").open("w", newline="") as fv,
    (out_dir / "waveform_summary.csv").open("w", newline="") as fs_,
  ):
    visits, summary = csv.writer(fv), csv.writer(fs_)
    visits.writerow(VISIT_COLUMNS)
    summary.writerow(SUMMARY_COLUMNS)
    for i, (csn, v) in enumerate({**VISITS, **extra_visits(extra)}.items()):
      mrn, age, sex, sbp, dbp, acuity, ed, dc, split, n_seg, signal = v
      cells = {
        "CSN": csn,
        "MRN": mrn,
        "Age": age,
        "Gender": sex,
        "Triage_SBP": sbp,
        "Triage_DBP": dbp,
        "Triage_acuity": acuity,
        "ED_dispo": ed,
        "DC_dispo": dc,
        "Triage_HR": "80",
        "CC": "Chest pain",
        "Arrival_time": f"2021-03-0{i % 9 + 1} 10:00",
      }
      visits.writerow([cells.get(c, "") for c in VISIT_COLUMNS])
      summary.writerow([csn, 600 * n_seg, n_seg, 600 * n_seg, n_seg, 0, 0])
      if split:
        splits[split].append(csn)
      if signal is not None:
        seconds, fs, flat = signal
        n = int(seconds * fs)
        rate = 1.3 if csn in VISITS else 0.8 + 0.15 * ((i - len(VISITS)) // 5 % 10)
        x = np.zeros((n, 1)) if flat else lead_ii_mv(n, fs, i, rate)
        folder = out_dir / "waveforms" / csn[-3:] / csn / "II"
        folder.mkdir(parents=True, exist_ok=True)
        wfdb.wrsamp(
          f"{csn}_1",
          fs=fs,
          units=["mV"],
          sig_name=["II"],
          p_signal=x,
          fmt=["16"],
          adc_gain=[200.0],
          baseline=[0],
          write_dir=str(folder),
        )
  for split, csn in EXTRA_SPLIT_ROWS:
    splits[split].append(csn)
  for split, csns in splits.items():
    (out_dir / f"split_chrono_{split}.csv").write_text("".join(f"{c}\n" for c in csns))
  return out_dir


if __name__ == "__main__":
  import sys  # pylint: disable=g-import-not-at-top

  from clef_jax import build  # pylint: disable=g-import-not-at-top

  sys.exit(build.dummy_data_main(write_dummy_data))
