r"""Aurora-BP (Microsoft, cuffless blood pressure): the ECG of one calibration measurement per
participant with the participant's baseline SBP / DBP.

    python -m clef_jax.build aurora_bp --manual_dir <Aurora-BP root> --data_dir OUT
    python -m clef_jax.build aurora_bp --config oscillometric --manual_dir ROOT --data_dir OUT

The downstream tasks "Aurora-BP baseline SBP / DBP" (regression, `docs/method.md §F.2`, tasks 17
and 18). Layout read (the dataset's data description, `docs/README.md` of
https://github.com/microsoft/aurorabp-sample-data, whose `sample/` folder has this layout):

- `participants.tsv` (tab-separated, one row per participant): `pid` (`a...` auscultatory,
  `o...` oscillometric protocol), `age` (years), `height` (inches), `weight` (pounds), `gender`
  (`M`/`F`), ...;
- `features.tsv` (tab-separated, one row per featurized measurement): `pid`, `baseline_sbp`,
  `baseline_dbp` (mmHg; "synthetic-Calibration average values", the same on every row of a
  participant), ...;
- `measurements_<protocol>/<pid>/<pid>.initial.Calibration_start_1.tsv`: one waveform file per
  measurement, tab-separated with a header line (`t`, `ekg`, `optical`, `pressure`, `accel_x`,
  ...), every stream resampled to 500 samples/s, `ekg` in millivolts.

One example per participant: the whole `ekg` column with NaN samples dropped (as the paper's
`AuroraBPECG_reg_Dataset` does before its random 5000-sample crop / zero-pad and z-score, which
belong to the evaluation input pipeline), stored in lead I's column of the shared
`clef_jax.data.schema.record_features` at 500 Hz, re-quantised at 1000 units per mV (1 uV
steps); plus `baseline_sbp`, `baseline_dbp` (mmHg) and `nan_dropped` (samples removed).
`metadata` holds sex, age, height and weight from `participants.tsv` (the baseline BP is the
target, so it is kept out of the metadata vector).

Split by participant exactly as the paper's `AuroraBPDataModule`: the participants (in
`participants.tsv` order) with a `features.tsv` row holding both baselines are split with
scikit-learn's `train_test_split(test_size=0.3, random_state=42)` into train / rest, and the rest
with `train_test_split(test_size=0.5, random_state=42)` into validation / test. The split is drawn
over the participants of *both* protocols (as the paper's code does), so a config keeps only its
own protocol's participants of each split (the others are counted as filtered `other_protocol`).
`sklearn_split` re-implements that shuffle (NumPy `RandomState(42).permutation`, `ceil` test size)
so scikit-learn is not needed; the tests check it against scikit-learn when it is installed.

Assumptions and deviations: the paper's code yields one sample per `features.tsv` row, i.e. each
participant repeated once per featurized measurement, all with the same file and baseline; here
each participant is one example. Skips: a participant without both baselines `missing_label`
(before the split, as in the paper); without the measurement file `missing_signal_file`; a file
without an `ekg` column or that does not parse `read_error`; no finite `ekg` sample `too_short`;
a flat `ekg` `all_leads_missing`. Baselines that differ between a participant's rows are flagged
`baseline_inconsistent` (the first row wins).
"""

from __future__ import annotations

import dataclasses
import math
import pathlib

import numpy as np
import tensorflow_datasets as tfds

from clef_jax import build_report as br
from clef_jax.data import schema
from clef_jax.data.wfdb_io import quantise
from clef_jax.data.windows import usable_leads

FS = 500
LEAD = "I"
PARTICIPANTS = "participants.tsv"
FEATURES = "features.tsv"
MEASUREMENT = "initial.Calibration_start_1"
SPLIT_SEED = 42
OTHER_PROTOCOL = "other_protocol"
BASELINE_INCONSISTENT = "baseline_inconsistent"


def sklearn_split(items: list, test_size: float, seed: int = SPLIT_SEED) -> tuple[list, list]:
  """`sklearn.model_selection.train_test_split(items, test_size=, random_state=seed)`.

  ShuffleSplit's rule: `n_test = ceil(test_size * n)`, a `RandomState(seed).permutation(n)`, test
  = its first `n_test` positions, train = the rest, each in permutation order.
  """
  n = len(items)
  n_test = math.ceil(test_size * n)
  perm = np.random.RandomState(seed).permutation(n)
  return [items[i] for i in perm[n_test:]], [items[i] for i in perm[:n_test]]


def participant_splits(pids: list[str], seed: int = SPLIT_SEED) -> dict[str, str]:
  """pid -> split: 70 % train, then the rest 50 / 50 validation / test (the paper's two calls)."""
  train, rest = sklearn_split(pids, 0.3, seed)
  validation, test = sklearn_split(rest, 0.5, seed)
  return {
    **{p: "train" for p in train},
    **{p: "validation" for p in validation},
    **{p: "test" for p in test},
  }


def _number(value) -> float:
  try:
    x = float(value)
  except (TypeError, ValueError):
    return math.nan
  return x if math.isfinite(x) else math.nan


def participant_metadata(row: dict) -> np.ndarray:
  """The `(11,)` metadata vector: sex, age, height (in), weight (lb) from `participants.tsv`."""
  from clef_jax.data import metadata as meta_lib  # Lazy.

  out = meta_lib.metadata_from_header(age=row.get("age"), sex=row.get("gender")).astype(np.float64)
  out[schema.METADATA_FIELDS.index("height_in")] = _number(row.get("height"))
  out[schema.METADATA_FIELDS.index("weight_lb")] = _number(row.get("weight"))
  out[schema.RATE_META_INDEX] = meta_lib.rate_meta(out)
  return out.astype(np.float32)


@dataclasses.dataclass
class Config(tfds.core.BuilderConfig):
  """Attributes: protocol: `auscultatory` or `oscillometric`; measurement: file-name part."""

  protocol: str = "auscultatory"
  measurement: str = MEASUREMENT


class Builder(br.ReportingBuilder, tfds.core.GeneratorBasedBuilder):
  """Aurora-BP baseline SBP / DBP from one calibration ECG per participant."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
    Config(
      name="auscultatory",
      protocol="auscultatory",
      description="Auscultatory protocol, initial Calibration_start_1 ECG.",
    ),
    Config(
      name="oscillometric",
      protocol="oscillometric",
      description="Oscillometric protocol, initial Calibration_start_1 ECG.",
    ),
  ]
  DEFAULT_CONFIG_NAME = "auscultatory"
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Aurora-BP is shared on request (https://github.com/microsoft/aurorabp-sample-data, "Data
  Access"). Pass the folder holding participants.tsv, features.tsv and measurements_auscultatory/
  (or measurements_oscillometric/) as --manual_dir.
  """

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
      features=schema.record_features(
        baseline_sbp=tfds.features.Scalar(dtype=np.float32, doc="Baseline SBP, mmHg."),
        baseline_dbp=tfds.features.Scalar(dtype=np.float32, doc="Baseline DBP, mmHg."),
        nan_dropped=tfds.features.Scalar(dtype=np.int32, doc="NaN ekg samples removed."),
      ),
      homepage="https://github.com/microsoft/aurorabp-sample-data",
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    import pandas as pd  # Lazy.

    root = pathlib.Path(dl_manager.manual_dir)
    missing = [root / n for n in (PARTICIPANTS, FEATURES) if not (root / n).is_file()]
    if missing:
      raise FileNotFoundError(
        f"missing {', '.join(map(str, missing))}: pass the Aurora-BP folder "
        "(participants.tsv, features.tsv, measurements_*/) as --manual_dir."
      )
    participants = pd.read_csv(root / PARTICIPANTS, sep="\t", dtype=str, keep_default_na=False)
    features = pd.read_csv(
      root / FEATURES,
      sep="\t",
      dtype=str,
      keep_default_na=False,
      usecols=lambda c: c in ("pid", "baseline_sbp", "baseline_dbp"),
    )
    for table, name in ((participants, PARTICIPANTS), (features, FEATURES)):
      need = {"pid"} | ({"baseline_sbp", "baseline_dbp"} if name == FEATURES else set())
      if not need <= set(table.columns):
        raise ValueError(f"{root / name}: needs columns {sorted(need)}; has {list(table.columns)}")

    baselines: dict[str, tuple[float, float]] = {}
    inconsistent = set()
    for row in features.to_dict("records"):
      pid = str(row["pid"]).strip()
      bp = (_number(row["baseline_sbp"]), _number(row["baseline_dbp"]))
      if math.isnan(bp[0]) or math.isnan(bp[1]):
        continue
      if pid in baselines and baselines[pid] != bp:
        inconsistent.add(pid)
      baselines.setdefault(pid, bp)

    report = self.report
    valid, rows, seen = [], {}, set()
    for row in participants.to_dict("records"):
      pid = str(row["pid"]).strip()
      if not pid:
        report.skipped(br.INVALID_ENTRY, "?", "participants.tsv row without pid")
        continue
      if pid in seen:
        report.skipped(br.DUPLICATE_RECORD, pid, PARTICIPANTS)
        continue
      seen.add(pid)
      if pid not in baselines:
        report.skipped(br.MISSING_LABEL, pid, f"no baseline_sbp/baseline_dbp in {FEATURES}")
        continue
      valid.append(pid)
      rows[pid] = row
    splits = participant_splits(valid)
    prefix = self.builder_config.protocol[0]
    todo = {"train": [], "validation": [], "test": []}
    for pid in valid:  # participants.tsv order within a split.
      if not pid.startswith(prefix):
        report.filtered(OTHER_PROTOCOL)
        continue
      todo[splits[pid]].append(pid)
    return {
      split: self._generate_examples(root, pids, rows, baselines, inconsistent, split)
      for split, pids in todo.items()
      if pids
    }

  def _generate_examples(self, root, pids, rows, baselines, inconsistent, split):
    report = self.report
    folder = root / f"measurements_{self.builder_config.protocol}"
    for pid in pids:
      path = folder / pid / f"{pid}.{self.builder_config.measurement}.tsv"
      try:
        signal, gain, baseline, mask, dropped, flags = read_ekg(path)
      except br.RecordError as e:
        report.skipped(e.reason, pid, e.detail)
        continue
      if pid in inconsistent:
        flags[BASELINE_INCONSISTENT] = "baseline differs between features.tsv rows"
      report.flagged_all(pid, flags)
      report.kept(pid, 1, split=split)
      sbp, dbp = baselines[pid]
      yield (
        pid,
        {
          "record_id": pid,
          "patient_id": pid,
          "signal": signal,
          "gain": gain,
          "baseline": baseline,
          "lead_mask": mask,
          "sampling_rate": np.float32(FS),
          "metadata": participant_metadata(rows[pid]),
          "baseline_sbp": np.float32(sbp),
          "baseline_dbp": np.float32(dbp),
          "nan_dropped": np.int32(dropped),
        },
      )


def read_ekg(path: pathlib.Path):
  """A measurement file's `ekg` column (NaN dropped) as schema fields in lead I's column.

  Returns:
    `(signal (T, 12) int16, gain (12,), baseline (12,), lead_mask (12,), NaN count, flags)`.

  Raises:
    build_report.RecordError: see the module doc.
  """
  import pandas as pd  # Lazy.

  if not path.is_file():
    raise br.RecordError(br.MISSING_SIGNAL_FILE, str(path.name))
  try:
    table = pd.read_csv(path, sep="\t", usecols=lambda c: c == "ekg")
  except Exception as e:  # Unparsable file: pandas raises many types.
    raise br.RecordError(br.READ_ERROR, f"{path.name}: {type(e).__name__}: {e}") from None
  if "ekg" not in table.columns:
    raise br.RecordError(br.READ_ERROR, f"{path.name}: no `ekg` column")
  x = pd.to_numeric(table["ekg"], errors="coerce").to_numpy(np.float64)
  keep = np.isfinite(x)
  x = x[keep]
  if x.size == 0:
    raise br.RecordError(br.TOO_SHORT, f"{path.name}: no finite ekg sample")
  q, clipped = quantise(x)
  lead = schema.lead_index(LEAD)
  signal = np.full((x.size, schema.NUM_LEADS), schema.INT16_NAN, np.int16)
  signal[:, lead] = q
  gain = np.ones(schema.NUM_LEADS, np.float32)
  gain[lead] = 1000.0
  baseline = np.zeros(schema.NUM_LEADS, np.float32)
  present = np.zeros(schema.NUM_LEADS, bool)
  present[lead] = True
  mask, flags = usable_leads(signal, gain, baseline, present)
  if not mask.any():
    raise br.RecordError(br.ALL_LEADS_MISSING, f"{path.name}: ekg flat")
  if clipped:
    flags[br.CLIPPED] = f"{clipped} samples"
  return signal, gain, baseline, mask, int((~keep).sum()), flags
