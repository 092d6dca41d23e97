"""PTB-XL 1.0.3: 21,799 10 s 12-lead ECGs with SCP-ECG statements (docs/method.md §F.2 tasks 1-5).

    python -m clef_jax.build ptbxl --config 100hz --manual_dir ~/ptb-xl-1.0.3 --data_dir OUT

Each record is stored whole at its native rate (config `100hz`: `records100/*_lr`, 1000 samples;
config `500hz`: `records500/*_hr`, 5000 samples); `sampling_rate` says which. Resampling to the
models' 500 Hz belongs to the input pipeline (records100 -> x5), which avoids the released CLEF
code's bug of reading records500 and stretching its first 2 s (docs/method.md §F.2, known bug 1).

Labels follow Strodthoff et al.'s benchmark (as CLEF's `ptb_utils.py`): every statement key in
`scp_codes` counts, whatever its likelihood, and

- `diagnostic`: statements with `diagnostic == 1` (44),
- `subdiagnostic`: their `diagnostic_subclass` (23),
- `superdiagnostic`: their `diagnostic_class` (5),
- `form`: statements with `form == 1` (19),
- `rhythm`: statements with `rhythm == 1` (12),

each a multi-hot uint8 vector over the fixed, sorted vocabularies `VOCABULARIES` below (the
classes of the official `scp_statements.csv`; sorted, as sklearn's `MultiLabelBinarizer` orders
them). The vocabularies are also in the dataset's `metadata.json` (`info.metadata["vocabularies"]`)
and in each feature's doc. Records with no label of a task keep an all-zero vector: CLEF drops them
per task at evaluation time. Splits: `strat_fold` 1-8 `train`, 9 `validation`, 10 `test`.
"""

from __future__ import annotations

import ast
import dataclasses
import math
import pathlib
from typing import TYPE_CHECKING

import numpy as np
import tensorflow_datasets as tfds

if TYPE_CHECKING:
  import pandas

from clef_jax import build_report as br
from clef_jax.data import schema
from clef_jax.data.windows import imap_ordered, record_loader

# The classes of PTB-XL 1.0.3's scp_statements.csv, per task, sorted.
_DIAGNOSTIC = (
  "1AVB",
  "2AVB",
  "3AVB",
  "ALMI",
  "AMI",
  "ANEUR",
  "ASMI",
  "CLBBB",
  "CRBBB",
  "DIG",
  "EL",
  "ILBBB",
  "ILMI",
  "IMI",
  "INJAL",
  "INJAS",
  "INJIL",
  "INJIN",
  "INJLA",
  "IPLMI",
  "IPMI",
  "IRBBB",
  "ISCAL",
  "ISCAN",
  "ISCAS",
  "ISCIL",
  "ISCIN",
  "ISCLA",
  "ISC_",
  "IVCD",
  "LAFB",
  "LAO/LAE",
  "LMI",
  "LNGQT",
  "LPFB",
  "LVH",
  "NDT",
  "NORM",
  "NST_",
  "PMI",
  "RAO/RAE",
  "RVH",
  "SEHYP",
  "WPW",
)
_SUBDIAGNOSTIC = (
  "AMI",
  "CLBBB",
  "CRBBB",
  "ILBBB",
  "IMI",
  "IRBBB",
  "ISCA",
  "ISCI",
  "ISC_",
  "IVCD",
  "LAFB/LPFB",
  "LAO/LAE",
  "LMI",
  "LVH",
  "NORM",
  "NST_",
  "PMI",
  "RAO/RAE",
  "RVH",
  "SEHYP",
  "STTC",
  "WPW",
  "_AVB",
)
_SUPERDIAGNOSTIC = ("CD", "HYP", "MI", "NORM", "STTC")
_FORM = (
  "ABQRS",
  "DIG",
  "HVOLT",
  "INVT",
  "LNGQT",
  "LOWT",
  "LPR",
  "LVOLT",
  "NDT",
  "NST_",
  "NT_",
  "PAC",
  "PRC(S)",
  "PVC",
  "QWAVE",
  "STD_",
  "STE_",
  "TAB_",
  "VCLVH",
)
_RHYTHM = (
  "AFIB",
  "AFLT",
  "BIGU",
  "PACE",
  "PSVT",
  "SARRH",
  "SBRAD",
  "SR",
  "STACH",
  "SVARR",
  "SVTAC",
  "TRIGU",
)
VOCABULARIES: dict[str, tuple[str, ...]] = {
  "diagnostic": tuple(sorted(_DIAGNOSTIC)),
  "subdiagnostic": tuple(sorted(_SUBDIAGNOSTIC)),
  "superdiagnostic": tuple(sorted(_SUPERDIAGNOSTIC)),
  "form": tuple(sorted(_FORM)),
  "rhythm": tuple(sorted(_RHYTHM)),
}
TASKS = tuple(VOCABULARIES)

# PTB-XL codes ages above 89 as 300 (de-identification); the metadata vector uses 90 for them.
_AGE_CODE_OVER_89 = 300
FOLD_TO_SPLIT = {**{f: "train" for f in range(1, 9)}, 9: "validation", 10: "test"}


def statement_labels(scp: pandas.DataFrame) -> dict[str, dict[str, list[str]]]:
  """Per statement code, the task labels it contributes (from `scp_statements.csv`).

  Args:
    scp: `scp_statements.csv` indexed by code.

  Returns:
    `{code: {task: [labels]}}`; labels outside `VOCABULARIES` are kept (the caller flags them).
  """

  def flag(value) -> bool:
    try:
      return float(value) == 1.0
    except (TypeError, ValueError):
      return False

  def text(value) -> str | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)

  out = {}
  for code, row in scp.iterrows():
    labels = {task: [] for task in TASKS}
    if flag(row.get("diagnostic")):
      labels["diagnostic"].append(code)
      for task, column in (
        ("subdiagnostic", "diagnostic_subclass"),
        ("superdiagnostic", "diagnostic_class"),
      ):
        if text(row.get(column)):
          labels[task].append(text(row.get(column)))
    if flag(row.get("form")):
      labels["form"].append(code)
    if flag(row.get("rhythm")):
      labels["rhythm"].append(code)
    out[str(code)] = labels
  return out


def multi_hot(labels, vocabulary: tuple[str, ...]) -> np.ndarray:
  """`(len(vocabulary),)` uint8 with ones at `labels` (labels outside it are ignored)."""
  index = {name: i for i, name in enumerate(vocabulary)}
  out = np.zeros(len(vocabulary), np.uint8)
  for label in labels:
    if label in index:
      out[index[label]] = 1
  return out


@dataclasses.dataclass
class Config(tfds.core.BuilderConfig):
  """Attributes: sampling_rate: 100 (records100, `filename_lr`) or 500 (records500)."""

  sampling_rate: int = 100


class Builder(br.ReportingBuilder, tfds.core.GeneratorBasedBuilder):
  """PTB-XL 1.0.3."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release (PTB-XL 1.0.3)."}
  BUILDER_CONFIGS = [
    Config(name="100hz", sampling_rate=100, description="records100, 1000 samples per record."),
    Config(name="500hz", sampling_rate=500, description="records500, 5000 samples per record."),
  ]
  DEFAULT_CONFIG_NAME = "100hz"
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Download PTB-XL 1.0.3 from https://physionet.org/content/ptb-xl/1.0.3/ (open access, e.g.
  `wget -r -N -c -np https://physionet.org/files/ptb-xl/1.0.3/`) and pass the folder holding
  `ptbxl_database.csv`, `scp_statements.csv`, `records100/` and `records500/` as `--manual_dir`.
  """

  def _info(self) -> tfds.core.DatasetInfo:
    labels = {
      task: tfds.features.Tensor(
        shape=(len(vocab),),
        dtype=np.uint8,
        doc=f"Multi-hot over {len(vocab)} {task} classes: {', '.join(vocab)}.",
      )
      for task, vocab in VOCABULARIES.items()
    }
    return self.dataset_info_from_configs(
      features=schema.record_features(
        **labels,
        scp_codes=tfds.features.Sequence(tfds.features.Text(), doc="SCP-ECG statements."),
        scp_likelihood=tfds.features.Sequence(
          tfds.features.Scalar(dtype=np.float32), doc="Likelihood (%) of each statement."
        ),
        age=tfds.features.Scalar(dtype=np.float32, doc="Years as in the CSV (300 = >89)."),
        sex=tfds.features.Text(doc="'F', 'M' or '' (PTB-XL sex 1 = female, 0 = male)."),
        strat_fold=tfds.features.Scalar(dtype=np.int32, doc="Stratified fold 1-10."),
      ),
      metadata=tfds.core.MetadataDict(vocabularies={k: list(v) for k, v in VOCABULARIES.items()}),
      homepage="https://physionet.org/content/ptb-xl/1.0.3/",
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    import pandas as pd  # Lazy.

    root = pathlib.Path(dl_manager.manual_dir)
    db = pd.read_csv(root / "ptbxl_database.csv")
    scp = pd.read_csv(root / "scp_statements.csv", index_col=0)
    statements = statement_labels(scp)
    # A repeated ecg_id keeps its first row, whatever the folds (so no record is in two splits).
    ids = pd.to_numeric(db["ecg_id"], errors="coerce")
    repeated = ids.notna() & ids.duplicated()
    for _, row in db[repeated].iterrows():
      self.report.skipped(
        br.DUPLICATE_RECORD, str(int(row["ecg_id"])), f"strat_fold={row.get('strat_fold')!r}"
      )
    db = db[~repeated]
    folds = pd.to_numeric(db["strat_fold"], errors="coerce")
    splits = {}
    for split in ("train", "validation", "test"):
      rows = db[folds.map(FOLD_TO_SPLIT) == split]
      if len(rows):
        splits[split] = self._generate_examples(root, rows, statements, split)
    # Rows without a usable fold (or id) belong to no split: report them once, here.
    for _, row in db[~folds.isin(list(FOLD_TO_SPLIT))].iterrows():
      self.report.skipped(
        br.INVALID_ENTRY, str(row.get("ecg_id")), f"strat_fold={row.get('strat_fold')!r}"
      )
    return splits

  def _generate_examples(self, root, rows, statements, split):
    from clef_jax.data import metadata as meta_lib  # Lazy.

    report = self.report
    rate = self.builder_config.sampling_rate
    file_column = "filename_lr" if rate == 100 else "filename_hr"
    # Valid, unique rows first (so the reads can run in worker processes), in CSV order.
    todo, seen = [], set()
    for _, row in rows.iterrows():
      try:
        record_id = str(int(row["ecg_id"]))
      except (TypeError, ValueError):
        report.skipped(br.INVALID_ENTRY, str(row.get("ecg_id")), "ecg_id")
        continue
      if record_id in seen:
        report.skipped(br.DUPLICATE_RECORD, record_id)
        continue
      seen.add(record_id)
      file_name = row.get(file_column)
      if not isinstance(file_name, str) or not file_name:
        report.skipped(br.INVALID_ENTRY, record_id, f"{file_column}={file_name!r}")
        continue
      todo.append((record_id, row, root / file_name))

    load = record_loader(sampling_rate=rate, windows="first")
    loaded = imap_ordered(load, ([path] for _, _, path in todo), num_workers=self.num_workers)
    for (record_id, row, _), rec in zip(todo, loaded):
      for _, error in rec.errors:
        report.skipped(error.reason, record_id, error.detail)
      if rec.index is None:
        continue

      # Labels: every statement key, whatever its likelihood (Strodthoff et al.).
      try:
        codes = ast.literal_eval(row["scp_codes"]) if isinstance(row["scp_codes"], str) else {}
        codes = {str(k): float(v) for k, v in dict(codes).items()}
      except (ValueError, SyntaxError, TypeError) as e:
        report.flagged(br.METADATA_UNPARSABLE, record_id, f"scp_codes: {e}")
        codes = {}
      labels = {task: [] for task in TASKS}
      unknown = []
      for code in codes:
        if code not in statements:
          unknown.append(code)
          continue
        for task in TASKS:
          for label in statements[code][task]:
            (labels[task] if label in VOCABULARIES[task] else unknown).append(label)
      if unknown:
        report.flagged(br.UNKNOWN_LABEL, record_id, ",".join(unknown))

      age, sex, ok = _age_sex(row.get("age"), row.get("sex"))
      if not ok:
        report.flagged(
          br.METADATA_UNPARSABLE, record_id, f"age={row.get('age')!r} sex={row.get('sex')!r}"
        )
      meta_age = min(age, 90.0) if age >= _AGE_CODE_OVER_89 else age
      try:
        patient_id = str(int(float(row.get("patient_id"))))
      except (TypeError, ValueError):
        report.flagged(br.METADATA_UNPARSABLE, record_id, f"patient_id={row.get('patient_id')!r}")
        patient_id = f"ecg{record_id}"  # Its own patient: cannot leak across splits.
      report.flagged_all(record_id, rec.flags)
      report.kept(record_id, 1, split=split)
      yield (
        record_id,
        {
          **rec.windows[0].features(),
          "record_id": record_id,
          "patient_id": patient_id,
          "metadata": np.asarray(meta_lib.metadata_from_header(age=meta_age, sex=sex), np.float32),
          **{task: multi_hot(labels[task], VOCABULARIES[task]) for task in TASKS},
          "scp_codes": list(codes),
          "scp_likelihood": np.asarray(list(codes.values()), np.float32),
          "age": np.float32(age),
          "sex": sex or "",
          "strat_fold": np.int32(row["strat_fold"]),
        },
      )


def _age_sex(age, sex) -> tuple[float, str | None, bool]:
  """CSV age/sex -> `(age or NaN, "F"/"M"/None, parsed_ok)`; PTB-XL codes sex 0 male, 1 female."""
  ok = True
  try:
    age = float(age)
  except (TypeError, ValueError):
    age, ok = math.nan, False
  try:
    sex = None if sex is None or math.isnan(float(sex)) else {0: "M", 1: "F"}[int(float(sex))]
  except (TypeError, ValueError, KeyError):
    sex, ok = None, False
  return age, sex, ok
