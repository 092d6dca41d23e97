"""MIMIC-IV-ECG v1.0 (diagnostic electrocardiogram matched subset): the pretraining archive.

    python -m clef_jax.build mimic_iv_ecg --config one_per_patient --manual_dir ~/mimic-iv-ecg \
        --data_dir OUT [--option metadata_csv=PATH]

Reads `record_list.csv` (`subject_id, study_id, file_name, ecg_time, path`) and the WFDB records
`files/pNNNN/pNNNNNNNN/sNNNNNNNN/NNNNNNNN.{hea,dat}` (10 s, 500 Hz, header lead order I, II, III,
aVR, aVF, aVL, V1-V6: leads are mapped by *name* into `clef_jax.data.schema.LEAD_ORDER`). Each
record is one example (its first 10 s) with the shared `record_features`:

- `record_id` = `study_id`, `patient_id` = `subject_id`; extra `path` and `ecg_time` (text).
- `metadata`: the docs/method.md §D 11-vector from the optional metadata CSV (keyed by `path`, official
  column names incl. `rate_meta` and `score2_risk`) via `clef_jax.meta_lib.metadata_from_mimic_frame`;
  all NaN for records without a row. The CSV is `--option metadata_csv=PATH`, by default
  `<manual_dir>/mimiciv_metadata_with_score2.csv` when that file exists.

Configs: `all` (every record) and `one_per_patient` (each subject's earliest readable record by
`ecg_time`, then `path`; the paper's 161K-patient set). Split by patient: a subject goes to
`validation` when `sha256("mimic_iv_ecg:<subject_id>")` mod 100 < `VALIDATION_PERCENT` (1), else
`train`. The rule depends on nothing but the id, so it is stable across versions and configs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import pathlib
from typing import TYPE_CHECKING

import numpy as np
import tensorflow_datasets as tfds

if TYPE_CHECKING:
  import pandas

from clef_jax import build_report as br
from clef_jax.data import parsing, schema
from clef_jax.data.windows import imap_ordered, record_loader

VALIDATION_PERCENT = 1
DEFAULT_METADATA_CSV = "mimiciv_metadata_with_score2.csv"
NOT_FIRST_OF_PATIENT = "not_first_record_of_patient"


def patient_split(subject_id: str, validation_percent: int = VALIDATION_PERCENT) -> str:
  """`train` or `validation` from a hash of the subject id (deterministic, patient-level)."""
  digest = hashlib.sha256(f"mimic_iv_ecg:{subject_id}".encode()).digest()
  return "validation" if int.from_bytes(digest[:8], "big") % 100 < validation_percent else "train"


def path_key(path: str) -> str:
  """Normalises a record path for joining (`files/p1000/.../40689238[.hea]` -> `p1000/.../...`)."""
  key = str(path).strip().replace("\\", "/").strip("/")
  for suffix in (".hea", ".dat"):
    if key.endswith(suffix):
      key = key[: -len(suffix)]
  return key[len("files/") :] if key.startswith("files/") else key


# Metadata CSV columns that hold numbers, and so can hold something unparsable.
_NUMERIC_COLUMNS = (
  "age_at_ecg",
  "anchor_age",
  "BMI (kg/m2)",
  "Height (Inches)",
  "Weight (Lbs)",
  "heart_rate",
  "heart_rate_var",
  "rate_meta",
  "score2_risk",
)


def unparsable_cells(df: pandas.DataFrame) -> dict[int, list[str]]:
  """Row position -> columns whose cell is present but does not parse (those become NaN).

  `metadata.metadata_from_mimic_frame` turns such cells into NaN without complaint (one odd row must
  not stop a build); this finds them so the build report can count them.
  """

  bad = {}
  for column in _NUMERIC_COLUMNS + ("Blood Pressure",):
    if column not in df.columns or df[column].dtype.kind in "fiub":
      continue  # Absent, or numeric throughout: nothing to misparse.
    if column == "Blood Pressure":
      parse = lambda v: parsing.parse_blood_pressure(v)[0]  # noqa: E731
    else:
      parse = parsing.parse_number
    for i, value in enumerate(df[column].to_numpy()):
      if (
        isinstance(value, str)
        and value.strip().lower() not in parsing.MISSING_TOKENS
        and math.isnan(parse(value))
      ):
        bad.setdefault(i, []).append(f"{column}={value!r}")
  return bad


def load_metadata(csv_path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, str]]:
  """Reads the metadata CSV into `{path_key: (11,) float32}` plus `{path_key: what did not parse}`.

  The vectors come from `metadata.metadata_from_mimic_frame` (unparsable cells -> NaN); should that
  raise, rows go one by one through `metadata.metadata_from_mimic_row`, and a row that still fails is
  all NaN. The first row of a path wins.
  """
  import pandas as pd  # Lazy.

  from clef_jax.data import metadata as meta_lib  # Lazy.

  df = pd.read_csv(csv_path, low_memory=False)
  if "path" not in df.columns:
    raise ValueError(f"{csv_path}: no `path` column (columns: {list(df.columns)[:20]})")
  keys = [path_key(p) if isinstance(p, str) else None for p in df["path"]]
  bad = {keys[i]: "; ".join(cols) for i, cols in unparsable_cells(df).items() if keys[i]}
  try:
    values = np.asarray(meta_lib.metadata_from_mimic_frame(df), np.float32)
  except Exception:  # One bad row must not cost every row its metadata.
    values = np.full((len(df), schema.NUM_METADATA), np.nan, np.float32)
    for i, (_, row) in enumerate(df.iterrows()):
      try:
        values[i] = meta_lib.metadata_from_mimic_row(row)
      except Exception as e:
        if keys[i]:
          bad[keys[i]] = f"{type(e).__name__}: {e}"
  table = {}
  for key, value in zip(keys, values):
    if key:
      table.setdefault(key, value)
  return table, bad


@dataclasses.dataclass
class Config(tfds.core.BuilderConfig):
  """Attributes: one_per_patient: keep only each subject's earliest readable record."""

  one_per_patient: bool = False


class Builder(br.ReportingBuilder, tfds.core.GeneratorBasedBuilder):
  """MIMIC-IV-ECG v1.0."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release (MIMIC-IV-ECG v1.0)."}
  BUILDER_CONFIGS = [
    Config(name="all", description="Every record (~800K)."),
    Config(
      name="one_per_patient",
      one_per_patient=True,
      description="Each subject's earliest readable record (~161K).",
    ),
  ]
  DEFAULT_CONFIG_NAME = "all"
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  MIMIC-IV-ECG v1.0 needs a PhysioNet account (open for registered users):
  https://physionet.org/content/mimic-iv-ecg/1.0/ . Download it, e.g.
  `wget -r -N -c -np --user USER --ask-password https://physionet.org/files/mimic-iv-ecg/1.0/`,
  and pass the folder holding `record_list.csv` and `files/` as `--manual_dir`. For the
  clinically-guided loss, also place CLEF's `mimiciv_metadata_with_score2.csv` (Zenodo 17572734)
  there, or pass its path with `--option metadata_csv=PATH`.
  """

  def __init__(self, *, metadata_csv: str | os.PathLike | None = None, **kwargs):
    """Args: metadata_csv: metadata CSV path (default: `<manual_dir>/<DEFAULT_METADATA_CSV>`)."""
    super().__init__(**kwargs)
    self._metadata_csv = metadata_csv

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
      features=schema.record_features(
        path=tfds.features.Text(doc="`path` column of record_list.csv."),
        ecg_time=tfds.features.Text(doc="`ecg_time` column of record_list.csv."),
      ),
      homepage="https://physionet.org/content/mimic-iv-ecg/1.0/",
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    import pandas as pd  # Lazy.

    root = pathlib.Path(dl_manager.manual_dir)
    records = pd.read_csv(root / "record_list.csv", dtype=str, keep_default_na=False)
    report = self.report

    # Metadata: optional, joined on the normalised path.
    csv_path = self._metadata_csv or (root / DEFAULT_METADATA_CSV)
    metadata, bad_rows = {}, {}
    if self._metadata_csv or pathlib.Path(csv_path).is_file():
      metadata, bad_rows = load_metadata(csv_path)

    # Valid, unique entries in file order; the rest are reported once, here.
    entries, seen = [], set()
    for row in records.itertuples(index=False):
      study, subject, path = (
        str(getattr(row, c, "")).strip() for c in ("study_id", "subject_id", "path")
      )
      if not (study and subject and path):
        report.skipped(
          br.INVALID_ENTRY,
          study or path or "?",
          f"study={study!r} subject={subject!r} path={path!r}",
        )
        continue
      if study in seen:
        report.skipped(br.DUPLICATE_RECORD, study, path)
        continue
      seen.add(study)
      entries.append(
        {
          "study_id": study,
          "subject_id": subject,
          "path": path,
          "ecg_time": str(getattr(row, "ecg_time", "")).strip(),
        }
      )

    if self.builder_config.one_per_patient:
      # Earliest first (unparsable times last, then by path), grouped by subject below.
      times = pd.to_datetime(
        pd.Series([e["ecg_time"] for e in entries], dtype=str), errors="coerce"
      )
      unknown = times.isna().to_numpy()
      ns = np.where(unknown, 0, times.to_numpy("datetime64[ns]").astype(np.int64))
      order = sorted(
        range(len(entries)),
        key=lambda i: (entries[i]["subject_id"], bool(unknown[i]), int(ns[i]), entries[i]["path"]),
      )
      entries = [entries[i] for i in order]

    # Read groups: one record each, or (one_per_patient) a subject's records in time order, of
    # which the first readable one is kept.
    groups = {"train": [], "validation": []}
    for entry in entries:
      split = groups[patient_split(entry["subject_id"])]
      if (
        self.builder_config.one_per_patient
        and split
        and split[-1][0]["subject_id"] == entry["subject_id"]
      ):
        split[-1].append(entry)
      else:
        split.append([entry])
    return {
      split: self._generate_examples(root, rows, metadata, bad_rows, csv_path, split)
      for split, rows in groups.items()
      if rows
    }

  def _generate_examples(self, root, groups, metadata, bad_rows, csv_path, split):
    report = self.report
    missing_nan = np.full(schema.NUM_METADATA, np.nan, np.float32)
    loaded = imap_ordered(
      record_loader(windows="first"),
      ([root / e["path"] for e in group] for group in groups),
      num_workers=self.num_workers,
    )
    for group, rec in zip(groups, loaded):
      for i, error in rec.errors:
        report.skipped(error.reason, group[i]["study_id"], error.detail)
      if rec.index is None:
        continue
      if len(group) > rec.index + 1:
        report.filtered(NOT_FIRST_OF_PATIENT, len(group) - rec.index - 1)
      entry = group[rec.index]
      record_id = entry["study_id"]
      key = path_key(entry["path"])
      meta = metadata.get(key)
      if key in bad_rows:
        report.flagged(br.METADATA_UNPARSABLE, record_id, bad_rows[key])
      elif meta is None and metadata:
        report.flagged(br.METADATA_MISSING, record_id, f"no row for {key} in {csv_path}")
      report.flagged_all(record_id, rec.flags)
      report.kept(record_id, 1, split=split)
      yield (
        record_id,
        {
          **rec.windows[0].features(),
          "record_id": record_id,
          "patient_id": entry["subject_id"],
          "metadata": missing_nan if meta is None else meta,
          "path": entry["path"],
          "ecg_time": entry["ecg_time"],
        },
      )
