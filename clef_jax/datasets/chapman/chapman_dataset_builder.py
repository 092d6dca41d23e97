r"""Chapman-Shaoxing / Ningbo 12-lead ECGs (PhysioNet "ecg-arrhythmia" 1.0.0), HeartLang's split.

    python -m clef_jax.build chapman --manual_dir ~/ecg-arrhythmia-1.0.0 --data_dir OUT \
        [--option split_dir=PATH]

The downstream task "Chapman, 38 labels" (`docs/method.md §F.2`, task 6). Layout read:

- `<manual_dir>/WFDBRecords/<NN>/<NNN>/JSxxxxx.{hea,mat}`: the archive as PhysioNet publishes it
  (https://physionet.org/content/ecg-arrhythmia/1.0.0/): 10 s, 500 Hz, 12 leads named I ... V6,
  MATLAB v4 `.mat` signal files (WFDB format `16+24`, gain 1000/mV), header comments
  `#Age:`, `#Sex:`, `#Dx:` (SNOMED CT codes, comma-separated).
- `chapman_train.csv`, `chapman_val.csv`, `chapman_test.csv`: HeartLang's public split (the
  repository PKUDigitalHealth/HeartLang, `datasets/dataset_preprocess/CSN/`; 16,546 / 1,860 /
  4,620 rows). Columns: `ecg_path` (e.g. `/chapman/WFDBRecords/08/089/JS08246.mat`; only the part
  from `WFDBRecords/` on is used, relative to `--manual_dir`), `age`, `diagnose` (acronyms), then
  the 38 label columns `LABELS`, 0/1. They are looked up in `--option split_dir=PATH`, by default
  in `--manual_dir` itself (they are not part of the PhysioNet archive: copy them there).

Labels are the split CSVs' 38 columns, as the paper's code reads them (`row[3:]`), so the label
set and its order are HeartLang's; the CSV header must name exactly `LABELS` (checked). What is
stored per record (one example, its 10 s):

- the shared `clef_jax.data.schema.record_features` at 500 Hz, leads matched by name;
- `labels`: `(38,)` uint8 multi-hot in `LABELS` order (also `info.metadata["labels"]`);
- `dx`: the header's SNOMED CT codes (kept raw); `diagnose`: the CSV's acronym text;
- `age`, `sex` from the header (`metadata` holds them as the 11-vector);
- splits `train` / `validation` / `test` from the three CSVs.

Preprocessing (the min-max scaling of the 12-lead record to [-3, 3], the 0.67-40 Hz band-pass and
the per-sample z-score of `docs/method.md §F.2`) belongs to the evaluation input pipeline; the
stored signal is the archive's, bit-exact. The archive has no patient ids: `patient_id` is the
record id. Rows naming a record without a header are skipped `missing_header`; a record listed
twice keeps its first row (`duplicate_record_id`); a row whose label cells are not 0/1 is
`invalid_list_entry`; records under `WFDBRecords/` that no CSV lists are counted as filtered
`not_in_split`.
"""

from __future__ import annotations

import csv
import math
import pathlib

import numpy as np
import tensorflow_datasets as tfds

from clef_jax import build_report as br
from clef_jax.data import schema
from clef_jax.data.dx import header_fields
from clef_jax.data.windows import imap_ordered, record_loader

# HeartLang's 38 labels, in the column order of its split CSVs.
LABELS: tuple[str, ...] = (
  "AQW",
  "UW",
  "SR",
  "WPW",
  "2AVB",
  "AT",
  "VB",
  "ARS",
  "STTC",
  "SA",
  "STE",
  "VPB",
  "TWO",
  "STTU",
  "ALS",
  "APB",
  "2AVB1",
  "PRIE",
  "CCR",
  "CR",
  "AF",
  "AVB",
  "QTIE",
  "LBBB",
  "VEB",
  "SVT",
  "RBBB",
  "1AVB",
  "STDD",
  "MI",
  "AFIB",
  "TWC",
  "PWC",
  "ERV",
  "RVH",
  "LVH",
  "ST",
  "JEB",
)
LEADING_COLUMNS = ("ecg_path", "age", "diagnose")
SPLIT_FILES = {
  "train": "chapman_train.csv",
  "validation": "chapman_val.csv",
  "test": "chapman_test.csv",
}
RECORDS_DIR = "WFDBRecords"
NOT_IN_SPLIT = "not_in_split"


def record_path(ecg_path: str) -> pathlib.PurePosixPath | None:
  """`/chapman/WFDBRecords/08/089/JS08246.mat` -> `WFDBRecords/08/089/JS08246` (None if no
  `WFDBRecords/` part)."""
  parts = pathlib.PurePosixPath(str(ecg_path).strip().replace("\\", "/")).parts
  if RECORDS_DIR not in parts:
    return None
  rel = pathlib.PurePosixPath(*parts[parts.index(RECORDS_DIR) :])
  return rel.with_suffix("") if rel.suffix in (".mat", ".hea") else rel


def read_split_csv(path: pathlib.Path) -> list[dict[str, str]]:
  """Rows of one split CSV; raises ValueError naming the file if its columns are not HeartLang's."""
  with path.open(newline="") as f:
    reader = csv.DictReader(f)
    columns = tuple(reader.fieldnames or ())
    if columns != LEADING_COLUMNS + LABELS:
      raise ValueError(
        f"{path}: expected the columns {', '.join(LEADING_COLUMNS)} and the 38 HeartLang labels "
        f"{', '.join(LABELS)}; got {', '.join(columns) or 'none'}. Use HeartLang's "
        "datasets/dataset_preprocess/CSN/chapman_{train,val,test}.csv unchanged."
      )
    return list(reader)


def _label_vector(row: dict[str, str]) -> np.ndarray | None:
  """The 38 label cells as uint8, or None if one is not 0/1."""
  out = np.zeros(len(LABELS), np.uint8)
  for i, name in enumerate(LABELS):
    try:
      value = float(row[name])
    except (TypeError, ValueError):
      return None
    if value not in (0.0, 1.0):
      return None
    out[i] = int(value)
  return out


class Builder(br.ReportingBuilder, tfds.core.GeneratorBasedBuilder):
  """Chapman-Shaoxing / Ningbo (ecg-arrhythmia 1.0.0), HeartLang split."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release (ecg-arrhythmia 1.0.0, HeartLang split)."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Download https://physionet.org/content/ecg-arrhythmia/1.0.0/ (open access) and pass the folder
  holding `WFDBRecords/` as `--manual_dir`. Put HeartLang's `chapman_train.csv`,
  `chapman_val.csv` and `chapman_test.csv` (github.com/PKUDigitalHealth/HeartLang,
  `datasets/dataset_preprocess/CSN/`) in that folder, or pass their folder with
  `--option split_dir=PATH`.
  """

  def __init__(self, *, split_dir: str | None = None, **kwargs):
    """Args: split_dir: folder of the three split CSVs (default: the manual dir)."""
    super().__init__(**kwargs)
    self.split_dir = split_dir

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
      features=schema.record_features(
        labels=tfds.features.Tensor(
          shape=(len(LABELS),),
          dtype=np.uint8,
          doc=f"Multi-hot over HeartLang's 38 labels: {', '.join(LABELS)}.",
        ),
        dx=tfds.features.Sequence(
          tfds.features.Scalar(dtype=np.int64), doc="SNOMED CT codes from `#Dx:`."
        ),
        diagnose=tfds.features.Text(doc="The split CSV's `diagnose` acronyms."),
        age=tfds.features.Scalar(dtype=np.float32, doc="Years from `#Age:`; NaN if unknown."),
        sex=tfds.features.Text(doc="'F', 'M' or '' (unknown)."),
      ),
      metadata=tfds.core.MetadataDict(labels=list(LABELS)),
      homepage="https://physionet.org/content/ecg-arrhythmia/1.0.0/",
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    root = pathlib.Path(dl_manager.manual_dir)
    split_dir = pathlib.Path(self.split_dir).expanduser() if self.split_dir else root
    missing = [name for name in SPLIT_FILES.values() if not (split_dir / name).is_file()]
    if missing:
      raise FileNotFoundError(
        f"{split_dir}: missing {', '.join(missing)}. Copy HeartLang's split CSVs "
        "(github.com/PKUDigitalHealth/HeartLang, datasets/dataset_preprocess/CSN/) there or pass "
        "--option split_dir=FOLDER."
      )
    rows = {split: read_split_csv(split_dir / name) for split, name in SPLIT_FILES.items()}
    # Rows are assigned to splits here, in train/validation/test order, so a record listed twice
    # keeps its first row whichever split the generators run first.
    seen, todo = set(), {split: [] for split in SPLIT_FILES}
    for split, split_rows in rows.items():
      for row in split_rows:
        rel = record_path(row.get("ecg_path") or "")
        record_id = rel.name if rel is not None else str(row.get("ecg_path"))
        labels = _label_vector(row)
        if rel is None or labels is None:
          self.report.skipped(
            br.INVALID_ENTRY, record_id, "ecg_path" if rel is None else "label cells not 0/1"
          )
          continue
        if record_id in seen:
          self.report.skipped(br.DUPLICATE_RECORD, record_id, split)
          continue
        seen.add(record_id)
        todo[split].append((record_id, root / rel, labels, row.get("diagnose") or ""))
    records_dir = root / RECORDS_DIR
    if records_dir.is_dir():
      unlisted = sum(1 for h in records_dir.rglob("*.hea") if h.stem not in seen)
      if unlisted:
        self.report.filtered(NOT_IN_SPLIT, unlisted)
    return {split: self._generate_examples(items, split) for split, items in todo.items() if items}

  def _generate_examples(self, items, split):
    from clef_jax.data import metadata as meta_lib  # Lazy.

    report = self.report
    load = record_loader(windows="first", short_records="skip")
    loaded = imap_ordered(load, ([path] for _, path, _, _ in items), num_workers=self.num_workers)
    for (record_id, _, labels, diagnose), rec in zip(items, loaded):
      for _, error in rec.errors:
        report.skipped(error.reason, record_id, error.detail)
      if rec.index is None:
        continue
      # The archive's headers are Challenge-style; its Dx entries are all SNOMED codes.
      age, sex, dx = header_fields(rec.comments, record_id, report, {})
      report.flagged_all(record_id, rec.flags)
      report.kept(record_id, 1, split=split)
      yield (
        record_id,
        {
          **rec.windows[0].features(),
          "record_id": record_id,
          "patient_id": record_id,  # The archive has no patient ids.
          "metadata": np.asarray(meta_lib.metadata_from_header(age=age, sex=sex), np.float32),
          "labels": labels,
          "dx": np.asarray(dx, np.int64),
          "diagnose": diagnose,
          "age": np.float32(age if math.isfinite(age) else np.nan),
          "sex": sex or "",
        },
      )
