r"""MC-MED 1.0.1 (emergency-department visits): lead II with dispositions, acuity and triage BP.

    python -m clef_jax.build mc_med --manual_dir ~/mc-med-1.0.1 --data_dir OUT \
        [--option visits_csv=PATH]

The downstream tasks "MC-MED ED disposition / DC disposition / triage acuity" (classification)
and "MC-MED triage SBP / DBP" (regression) of `docs/method.md §F.2` (tasks 9, 10, 11, 15, 16).
Layout read (PhysioNet MC-MED README, https://physionet.org/content/mc-med/):

- `split_chrono_train.csv`, `split_chrono_val.csv`, `split_chrono_test.csv`: the chronological,
  patient-disjoint split, one visit id (CSN) per line, no header (a non-numeric first line is
  taken as a header and ignored);
- `visits.csv`: one row per visit, keyed by `CSN` (or `visit_id`), with `MRN` (patient),
  `Age`, `Gender`, `Triage_SBP`, `Triage_DBP` (mmHg), `Triage_acuity` (`"3-Urgent"`, ...),
  `ED_dispo`, `DC_dispo`; `--option visits_csv=PATH` reads another table with these columns;
- `II_n_segments` (segments of lead II per visit) from `visits.csv` when it has the column,
  else from `waveform_summary.csv`; without either the waveform folder alone decides;
- `waveforms/<last 3 digits of CSN>/<CSN>/II/<CSN>_1.{hea,dat}`: the first lead II segment (the
  `waveforms_Nxx.zip` archives unzipped into `waveforms/`), 500 Hz.

One example per visit: the first 10 s of segment 1 (samples [0, 5000); a shorter segment is
padded with 0 mV and flagged `zero_padded`; another rate is resampled to 500 Hz), stored in lead
II's column of the shared `clef_jax.data.schema.record_features`. The band-pass (0.67-40 Hz) and
z-score of `docs/method.md §F.2` belong to the evaluation input pipeline. Labels, as class
indices with -1 where the visit has no value (the evaluation drops those per task):

- `ed_dispo`: `ED_DISPO_CLASSES`; any other non-empty value is class 0 (as the paper's code
  does), flagged `unknown_label`;
- `dc_dispo`: `DC_DISPO_CLASSES`, grouped by the keywords in `DC_DISPO_GROUPS` (first group
  that matches; unmatched values are `Other`);
- `triage_acuity`: ESI 1-5 -> 0-4 (`ACUITY_CLASSES`); other values -1, flagged `unknown_label`;
- `triage_sbp`, `triage_dbp`: mmHg, NaN where missing (flagged `missing_label:<task>`);
- raw `ed_dispo_text`, `dc_dispo_text`, `triage_acuity_text`; `ii_n_segments`.

`patient_id` is the `MRN` (the CSN where it is missing); `metadata` holds age and sex only (the
triage BP is a task target, so it is kept out of the metadata vector). Splits `train`,
`validation`, `test`. Skips: a split CSN without a visits row `invalid_list_entry`; a visit
without lead II (`II_n_segments` 0, or no `II/` folder and no segment count) `missing_lead`; one
whose `II/<CSN>_1.hea` is absent although segments are listed `missing_header`; one without any
of the five labels `missing_label`; one listed twice `duplicate_record_id` (first split wins);
visits in no split CSV are counted as filtered `not_in_split`.
"""

from __future__ import annotations

import math
import pathlib
import re

import numpy as np
import tensorflow_datasets as tfds

from clef_jax import build_report as br
from clef_jax.data import parsing, schema
from clef_jax.data.windows import imap_ordered, record_loader

SPLIT_FILES = {
  "train": "split_chrono_train.csv",
  "validation": "split_chrono_val.csv",
  "test": "split_chrono_test.csv",
}
VISITS_CSV = "visits.csv"
WAVEFORM_SUMMARY_CSV = "waveform_summary.csv"
KEY_COLUMNS = ("CSN", "visit_id")
LEAD = "II"
NOT_IN_SPLIT = "not_in_split"

ED_DISPO_CLASSES = ("Discharge", "Inpatient", "Observation", "ICU")
DC_DISPO_CLASSES = (
  "Home/Self-care",
  "Care facility",
  "Hospital transfer",
  "Hospice/End-of-life",
  "Psychiatric/Rehab",
  "Other",
)
# Keywords (substrings of `DC_dispo`) per group, in matching order; the paper's grouping.
DC_DISPO_GROUPS = (
  ("Home/Work", "Left Against Medical Advice"),
  (
    "Home Health Services",
    "Skilled Nursing Facility",
    "Residential Care Facility",
    "Custodial or Supportive Care Facility",
  ),
  (
    "Acute Care Hospital",
    "Long Term Care Hospital",
    "Federal Hospital",
    "Lucile Packard Children's Hospital",
    "Stanford Children's Hospital",
    "Critical Access Hospital",
    "Planned inpatient readmission",
    "Stanford Acute Care",
  ),
  ("Expired", "Hospice", "Organ Harvest", "Donor"),
  ("Psychiatric Hospital", "Stanford Psych", "Inpatient Rehabilitation Facility"),
)
ACUITY_CLASSES = ("1-Resuscitation", "2-Emergent", "3-Urgent", "4-Semi-Urgent", "5-Non-Urgent")
CLASS_TASKS = {
  "ed_dispo": ED_DISPO_CLASSES,
  "dc_dispo": DC_DISPO_CLASSES,
  "triage_acuity": ACUITY_CLASSES,
}
REGRESSION_TASKS = {"triage_sbp": "Triage_SBP", "triage_dbp": "Triage_DBP"}


def _text(value) -> str | None:
  """A cell as stripped text, None when empty / NaN."""
  if value is None or (isinstance(value, float) and math.isnan(value)):
    return None
  text = str(value).strip()
  return text if text and text.lower() not in parsing.MISSING_TOKENS else None


def ed_dispo_class(value) -> tuple[int, bool]:
  """`(class, known)`: `ED_DISPO_CLASSES` index; other values 0 (known False); missing -1."""
  text = _text(value)
  if text is None:
    return -1, True
  return (ED_DISPO_CLASSES.index(text), True) if text in ED_DISPO_CLASSES else (0, False)


def dc_dispo_class(value) -> int:
  """`DC_DISPO_CLASSES` index by keyword group (unmatched: `Other`); missing -1."""
  text = _text(value)
  if text is None:
    return -1
  for group, keywords in enumerate(DC_DISPO_GROUPS):
    if any(k in text for k in keywords):
      return group
  return len(DC_DISPO_GROUPS)


def acuity_class(value) -> tuple[int, bool]:
  """`"3-Urgent"` (or `3`) -> `(2, True)`; missing `(-1, True)`; unparsable `(-1, False)`."""
  text = _text(value)
  if text is None:
    return -1, True
  m = re.match(r"\s*(\d+)(?:\.0*)?\s*(?:-|$)", text)
  level = int(m.group(1)) if m else 0
  return (level - 1, True) if 1 <= level <= 5 else (-1, False)


def csn_text(value) -> str | None:
  """A visit id cell as digits (`"12345.0"` -> `"12345"`), None if it is not one."""
  text = _text(value)
  if text is None:
    return None
  text = re.sub(r"\.0+$", "", text)
  return text if text.isdigit() else None


def read_split_csv(path: pathlib.Path) -> list[str]:
  """Visit ids of one split file (first column; a non-numeric first line is a header)."""
  out = []
  for i, line in enumerate(path.read_text().splitlines()):
    cell = line.split(",")[0].strip().strip('"')
    if not cell:
      continue
    csn = csn_text(cell)
    if csn is None and i == 0:
      continue  # Header.
    out.append(csn if csn is not None else cell)
  return out


def _number(value) -> float:
  try:
    x = float(value)
  except (TypeError, ValueError):
    return math.nan
  return x if math.isfinite(x) else math.nan


class Builder(br.ReportingBuilder, tfds.core.GeneratorBasedBuilder):
  """MC-MED 1.0.1, lead II."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release (MC-MED 1.0.1)."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  MC-MED is credentialed: download https://physionet.org/content/mc-med/ (visits.csv,
  waveform_summary.csv, split_chrono_*.csv and the waveforms_*.zip archives), unzip the archives
  into `waveforms/` and pass the folder as `--manual_dir`.
  """

  def __init__(self, *, visits_csv: str | None = None, **kwargs):
    """Args: visits_csv: the visit table (default `<manual_dir>/visits.csv`)."""
    super().__init__(**kwargs)
    self.visits_csv = visits_csv

  def _info(self) -> tfds.core.DatasetInfo:
    def class_feature(names, column):
      listing = ", ".join(f"{i} {n}" for i, n in enumerate(names))
      return tfds.features.Scalar(dtype=np.int64, doc=f"`{column}` class: {listing}; -1 missing.")

    return self.dataset_info_from_configs(
      features=schema.record_features(
        ed_dispo=class_feature(ED_DISPO_CLASSES, "ED_dispo"),
        dc_dispo=class_feature(DC_DISPO_CLASSES, "DC_dispo"),
        triage_acuity=class_feature(ACUITY_CLASSES, "Triage_acuity"),
        triage_sbp=tfds.features.Scalar(dtype=np.float32, doc="Triage SBP, mmHg; NaN missing."),
        triage_dbp=tfds.features.Scalar(dtype=np.float32, doc="Triage DBP, mmHg; NaN missing."),
        ed_dispo_text=tfds.features.Text(doc="Raw `ED_dispo`."),
        dc_dispo_text=tfds.features.Text(doc="Raw `DC_dispo`."),
        triage_acuity_text=tfds.features.Text(doc="Raw `Triage_acuity`."),
        ii_n_segments=tfds.features.Scalar(dtype=np.int32, doc="Lead II segments; -1 unknown."),
      ),
      metadata=tfds.core.MetadataDict(classes={k: list(v) for k, v in CLASS_TASKS.items()}),
      homepage="https://physionet.org/content/mc-med/",
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    import pandas as pd  # Lazy.

    root = pathlib.Path(dl_manager.manual_dir)
    visits_path = (
      pathlib.Path(self.visits_csv).expanduser() if self.visits_csv else (root / VISITS_CSV)
    )
    missing = [
      p for p in [visits_path, *(root / n for n in SPLIT_FILES.values())] if not p.is_file()
    ]
    if missing:
      raise FileNotFoundError(
        f"missing {', '.join(map(str, missing))}: pass the MC-MED 1.0.1 folder as --manual_dir "
        "(or the visit table as --option visits_csv=PATH)."
      )
    visits = pd.read_csv(visits_path, dtype=str, keep_default_na=False)
    key = next((c for c in KEY_COLUMNS if c in visits.columns), None)
    if key is None:
      raise ValueError(f"{visits_path}: no visit id column ({' or '.join(KEY_COLUMNS)}).")
    rows = {}
    for row in visits.to_dict("records"):
      csn = csn_text(row.get(key))
      if csn is not None and csn not in rows:
        rows[csn] = row
    segments = {csn: _number(r.get("II_n_segments")) for csn, r in rows.items()}
    summary = root / WAVEFORM_SUMMARY_CSV
    if "II_n_segments" not in visits.columns and summary.is_file():
      table = pd.read_csv(summary, dtype=str, keep_default_na=False)
      skey = next((c for c in KEY_COLUMNS if c in table.columns), None)
      if skey is not None and "II_n_segments" in table.columns:
        for r in table.to_dict("records"):
          csn = csn_text(r.get(skey))
          if csn in segments:
            segments[csn] = _number(r.get("II_n_segments"))

    seen, todo = set(), {split: [] for split in SPLIT_FILES}
    for split, name in SPLIT_FILES.items():
      for csn in read_split_csv(root / name):
        if csn in seen:
          self.report.skipped(br.DUPLICATE_RECORD, csn, split)
          continue
        seen.add(csn)
        if csn not in rows:
          self.report.skipped(br.INVALID_ENTRY, csn, f"not in {visits_path.name}")
          continue
        todo[split].append((csn, rows[csn], segments.get(csn, math.nan)))
    unlisted = sum(1 for csn in rows if csn not in seen)
    if unlisted:
      self.report.filtered(NOT_IN_SPLIT, unlisted)
    return {
      split: self._generate_examples(root, items, split) for split, items in todo.items() if items
    }

  def _generate_examples(self, root: pathlib.Path, items, split: str):
    from clef_jax.data import metadata as meta_lib  # Lazy.

    report = self.report
    usable = []
    for csn, row, n_segments in items:
      labels, flags = _labels(row)
      lead_dir = root / "waveforms" / csn[-3:] / csn / LEAD
      if n_segments == 0:
        report.skipped(br.MISSING_LEAD, csn, "II_n_segments=0")
        continue
      if not lead_dir.is_dir():  # Absent although the summary lists segments: a missing file.
        reason = br.MISSING_LEAD if math.isnan(n_segments) else br.MISSING_HEADER
        report.skipped(reason, csn, f"no {lead_dir.relative_to(root)}/")
        continue
      if all(labels[k] == -1 for k in CLASS_TASKS) and all(
        math.isnan(labels[k]) for k in REGRESSION_TASKS
      ):
        report.skipped(br.MISSING_LABEL, csn, "no ED_dispo, DC_dispo, acuity or triage BP")
        continue
      usable.append((csn, row, n_segments, labels, flags, lead_dir / f"{csn}_1"))

    load = record_loader(windows="first", short_records="pad", lead=LEAD)
    loaded = imap_ordered(load, ([path] for *_, path in usable), num_workers=self.num_workers)
    for (csn, row, n_segments, labels, flags, _), rec in zip(usable, loaded):
      for _, error in rec.errors:
        report.skipped(error.reason, csn, error.detail)
      if rec.index is None:
        continue
      report.flagged_all(csn, {**flags, **rec.flags})
      report.kept(csn, 1, split=split)
      patient = csn_text(row.get("MRN")) or _text(row.get("MRN")) or csn
      yield (
        csn,
        {
          **rec.windows[0].features(),
          "record_id": csn,
          "patient_id": patient,
          "metadata": np.asarray(
            meta_lib.metadata_from_header(age=row.get("Age"), sex=row.get("Gender")), np.float32
          ),
          **{k: np.int64(labels[k]) for k in CLASS_TASKS},
          **{k: np.float32(labels[k]) for k in REGRESSION_TASKS},
          "ed_dispo_text": _text(row.get("ED_dispo")) or "",
          "dc_dispo_text": _text(row.get("DC_dispo")) or "",
          "triage_acuity_text": _text(row.get("Triage_acuity")) or "",
          "ii_n_segments": np.int32(n_segments if math.isfinite(n_segments) else -1),
        },
      )


def _labels(row) -> tuple[dict[str, float], dict[str, str]]:
  """The five task labels of a visits row and the flags they raise."""
  flags = {}
  ed, ed_known = ed_dispo_class(row.get("ED_dispo"))
  acuity, acuity_known = acuity_class(row.get("Triage_acuity"))
  unknown = [
    f"{c}={row.get(c)!r}"
    for c, ok in (("ED_dispo", ed_known), ("Triage_acuity", acuity_known))
    if not ok
  ]
  if unknown:
    flags[br.UNKNOWN_LABEL] = ", ".join(unknown)
  labels = {
    "ed_dispo": ed,
    "dc_dispo": dc_dispo_class(row.get("DC_dispo")),
    "triage_acuity": acuity,
    **{k: _number(row.get(c)) for k, c in REGRESSION_TASKS.items()},
  }
  for task, value in labels.items():
    if (task in CLASS_TASKS and value == -1) or (task in REGRESSION_TASKS and math.isnan(value)):
      flags[f"missing_label:{task}"] = ""
  return labels, flags
