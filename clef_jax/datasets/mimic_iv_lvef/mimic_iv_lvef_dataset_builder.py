r"""MIMIC-IV-ECG LVEF: ECGFounder's `LVEF.csv` labels joined to the MIMIC-IV-ECG v1.0 records.

    python -m clef_jax.build mimic_iv_lvef --manual_dir ~/mimic-iv-ecg --data_dir OUT \
        [--config lvef_lt_50] [--option lvef_csv=PATH] [--option metadata_csv=PATH]

The downstream tasks "MIMIC-IV LVEF class" (binary) and "MIMIC-IV LVEF (%)" (regression) of
`docs/method.md §F.2` (tasks 12 and 14). Layout read:

- the MIMIC-IV-ECG tree (`files/pNNNN/pNNNNNNNN/sNNNNNNNN/NNNNNNNN.{hea,dat}`, 500 Hz, 10 s; read
  with the `mimic_iv_ecg` builder's record reading, leads mapped by name);
- `LVEF.csv` from ECGFounder (https://github.com/PKUDigitalHealth/ECGFounder, `csv/LVEF.csv`),
  by default `<manual_dir>/LVEF.csv`: one row per ECG with the columns `subject_id`,
  `waveform_path` (relative to the MIMIC-IV-ECG root, e.g. `files/p1000/p10000032/s4.../4...`),
  `LVEF` (%) and `class` (its last column). ECGFounder's `preprocess_mimic.py` reads
  `row.waveform_path`; CLEF's `LVEF_1lead_*_Dataset` read the path as column 1, the class as the
  last column and the value as the second-to-last. Columns are taken by name, and by those
  positions when a name is absent.

One example per CSV row: the first 10 s of all 12 leads (the paper's input is lead II, or lead I;
NaN -> 0 and z-score, no filter, belong to the evaluation input pipeline) with the shared
`clef_jax.data.schema.record_features`, plus `lvef` (%; NaN where missing), `lvef_class` (the
task-12 label under this config, -1 unknown), `lvef_class_csv` (the CSV's `class` value, -1
missing), `path` and `row` (position in the CSV). `record_id` is the study id (file stem),
`patient_id` the `subject_id` (or the `pNNNNNNNN` folder). `metadata` comes from CLEF's
`mimiciv_metadata_with_score2.csv` when present (as in the `mimic_iv_ecg` builder), else NaN.

**The class threshold is uncertain.** CLEF trains on the CSV's last column as it is; neither the
paper nor its code states what it encodes. ECGFounder's paper reports LVEF < 50 % (reduced
ejection fraction) against >= 50 %, and third-party readings of `LVEF.csv` describe `class` as
1 for LVEF >= 50 %. Configs: `csv_class` (default, the paper's code: `lvef_class` = the CSV's
`class`), `lvef_lt_50` and `lvef_lt_40` (`lvef_class` = 1 when `LVEF` < 50 / 40 %, positive =
reduced EF); `Config(class_threshold=T)` gives any other cut. AUROC does not depend on which of
the two classes is called positive, so `csv_class` and `lvef_lt_50` give the same AUROC if
`class` is indeed the >= 50 % indicator.

Split as CLEF's `LVEF1LeadDataModule`, by CSV row position (not shuffled, not by patient): rows
`[0, int(0.8 n))` train, of the remaining `m` rows the first `m // 2` validation and the rest
test; positions count every CSV row, so skipped rows do not shift the others. Skips: a row
without a path `invalid_list_entry`; a row without `LVEF` and without a usable `class` (or,
under a threshold config, without `LVEF`) `missing_label`; a path already stored from an
earlier row `duplicate_record_id`; and the record-reading reasons of `clef_jax.build_report`. An `LVEF` outside
[0, 100] is kept and flagged `lvef_out_of_range` (the released file holds such values).
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
import re

import numpy as np
import tensorflow_datasets as tfds

from clef_jax import build
from clef_jax import build_report as br
from clef_jax.data import schema
from clef_jax.data.windows import imap_ordered, record_loader

LVEF_CSV = "LVEF.csv"
PATH_COLUMNS = ("waveform_path", "path")
LVEF_COLUMNS = ("LVEF", "lvef")
CLASS_COLUMNS = ("class", "label")
TRAIN_FRACTION = 0.8
OUT_OF_RANGE = "lvef_out_of_range"


def _mimic():
  """The `mimic_iv_ecg` builder module (its path normalisation and metadata CSV reader)."""
  return build.dataset_module("mimic_iv_ecg")


def row_splits(n: int) -> list[str]:
  """Split of each CSV row position: first `int(0.8 n)` train, then half / half of the rest."""
  n_train = int(TRAIN_FRACTION * n)
  n_val = (n - n_train) // 2
  return ["train"] * n_train + ["validation"] * n_val + ["test"] * (n - n_train - n_val)


def _number(value) -> float:
  try:
    x = float(value)
  except (TypeError, ValueError):
    return math.nan
  return x if math.isfinite(x) else math.nan


def _column(columns: list[str], names: tuple[str, ...], position: int) -> str:
  for name in names:
    if name in columns:
      return name
  return columns[position]


@dataclasses.dataclass
class Config(tfds.core.BuilderConfig):
  """Attributes: class_threshold: None = the CSV's `class`; T = 1 when `LVEF` < T (%)."""

  class_threshold: float | None = None


class Builder(br.ReportingBuilder, tfds.core.GeneratorBasedBuilder):
  """MIMIC-IV-ECG records with ECGFounder's LVEF labels."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
    Config(name="csv_class", description="lvef_class = LVEF.csv's class column (paper code)."),
    Config(name="lvef_lt_50", class_threshold=50.0, description="lvef_class = LVEF < 50 %."),
    Config(name="lvef_lt_40", class_threshold=40.0, description="lvef_class = LVEF < 40 %."),
  ]
  DEFAULT_CONFIG_NAME = "csv_class"
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  MIMIC-IV-ECG v1.0 (https://physionet.org/content/mimic-iv-ecg/1.0/, PhysioNet account) as for
  the mimic_iv_ecg builder, plus ECGFounder's csv/LVEF.csv
  (https://github.com/PKUDigitalHealth/ECGFounder) in that folder or as --option lvef_csv=PATH.
  """

  def __init__(
    self,
    *,
    lvef_csv: str | os.PathLike | None = None,
    metadata_csv: str | os.PathLike | None = None,
    **kwargs,
  ):
    """Args: lvef_csv / metadata_csv: label and metadata CSVs (defaults: in `manual_dir`)."""
    super().__init__(**kwargs)
    self._lvef_csv = lvef_csv
    self._metadata_csv = metadata_csv

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
      features=schema.record_features(
        lvef=tfds.features.Scalar(dtype=np.float32, doc="LVEF, %; NaN missing."),
        lvef_class=tfds.features.Scalar(dtype=np.int64, doc="Task label; -1 unknown."),
        lvef_class_csv=tfds.features.Scalar(dtype=np.int64, doc="CSV `class`; -1 missing."),
        path=tfds.features.Text(doc="`waveform_path` of LVEF.csv."),
        row=tfds.features.Scalar(dtype=np.int64, doc="Row position in LVEF.csv."),
      ),
      homepage="https://github.com/PKUDigitalHealth/ECGFounder",
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    import pandas as pd  # Lazy.

    root = pathlib.Path(dl_manager.manual_dir)
    csv_path = pathlib.Path(self._lvef_csv).expanduser() if self._lvef_csv else root / LVEF_CSV
    if not csv_path.is_file():
      raise FileNotFoundError(
        f"{csv_path} not found: place ECGFounder's LVEF.csv in --manual_dir "
        "or pass --option lvef_csv=PATH."
      )
    table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    columns = list(table.columns)
    if len(columns) < 3:
      raise ValueError(
        f"{csv_path}: expected subject_id, waveform_path, LVEF, class; got {columns}"
      )
    path_col = _column(columns, PATH_COLUMNS, 1)
    lvef_col = _column(columns, LVEF_COLUMNS, -2)
    class_col = _column(columns, CLASS_COLUMNS, -1)
    mimic = _mimic()
    meta_path = pathlib.Path(self._metadata_csv or root / mimic.DEFAULT_METADATA_CSV)
    metadata = (
      mimic.load_metadata(meta_path)[0] if (self._metadata_csv or meta_path.is_file()) else {}
    )

    report, threshold = self.report, self.builder_config.class_threshold
    splits = row_splits(len(table))
    todo = {"train": [], "validation": [], "test": []}
    seen = set()
    for i, row in enumerate(table.to_dict("records")):
      path = str(row.get(path_col, "")).strip()
      key = mimic.path_key(path) if path else ""
      record_id = key.rsplit("/", 1)[-1] if key else f"row{i}"
      if not key:
        report.skipped(br.INVALID_ENTRY, record_id, f"{csv_path.name} row {i}: no path")
        continue
      lvef = _number(row.get(lvef_col))
      csv_class = _number(row.get(class_col))
      csv_class = int(csv_class) if csv_class in (0.0, 1.0) else -1
      if threshold is None:
        label = csv_class
      else:
        label = -1 if math.isnan(lvef) else int(lvef < threshold)
      if label == -1 and math.isnan(lvef):
        report.skipped(
          br.MISSING_LABEL,
          record_id,
          f"row {i}: LVEF={row.get(lvef_col)!r} class={row.get(class_col)!r}",
        )
        continue
      if key in seen:
        report.skipped(br.DUPLICATE_RECORD, record_id, f"row {i}: {path}")
        continue
      seen.add(key)
      subject = str(row.get("subject_id", "")).strip()
      if not subject:
        m = re.search(r"/p(\d{8})/", "/" + key)
        subject = m.group(1) if m else record_id
      todo[splits[i]].append(
        {
          "row": i,
          "path": path,
          "key": key,
          "record_id": record_id,
          "subject_id": subject,
          "lvef": lvef,
          "label": label,
          "csv_class": csv_class,
        }
      )
    return {
      split: self._generate_examples(root, items, metadata, split)
      for split, items in todo.items()
      if items
    }

  def _generate_examples(self, root, items, metadata, split):
    report = self.report
    missing_nan = np.full(schema.NUM_METADATA, np.nan, np.float32)
    loaded = imap_ordered(
      record_loader(windows="first"),
      ([root / "files" / e["key"]] for e in items),
      num_workers=self.num_workers,
    )
    for e, rec in zip(items, loaded):
      for _, error in rec.errors:
        report.skipped(error.reason, e["record_id"], error.detail)
      if rec.index is None:
        continue
      flags = dict(rec.flags)
      if e["label"] == -1:
        flags[br.UNKNOWN_LABEL] = f"class not 0/1 in row {e['row']}"
      if not math.isnan(e["lvef"]) and not 0.0 <= e["lvef"] <= 100.0:
        flags[OUT_OF_RANGE] = f"LVEF={e['lvef']:g}"
      elif math.isnan(e["lvef"]):
        flags["missing_label:lvef"] = ""
      report.flagged_all(e["record_id"], flags)
      report.kept(e["record_id"], 1, split=split)
      meta = metadata.get(e["key"])
      yield (
        e["record_id"],
        {
          **rec.windows[0].features(),
          "record_id": e["record_id"],
          "patient_id": e["subject_id"],
          "metadata": missing_nan if meta is None else meta,
          "lvef": np.float32(e["lvef"]),
          "lvef_class": np.int64(e["label"]),
          "lvef_class_csv": np.int64(e["csv_class"]),
          "path": e["path"],
          "row": np.int64(e["row"]),
        },
      )
