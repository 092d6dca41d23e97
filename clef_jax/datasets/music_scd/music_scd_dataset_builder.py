r"""MUSIC (sudden cardiac death in chronic heart failure, PhysioNet "music-sudden-cardiac-death"
1.0.1): one valid 10 s Holter window per patient with the patient's outcome.

    python -m clef_jax.build music_scd --manual_dir ~/music-sudden-cardiac-death-1.0.1 \
        --data_dir OUT

The downstream task "MUSIC outcome" (4 classes, `docs/method.md §F.2`, task 13). Layout read
(https://physionet.org/content/music-sudden-cardiac-death/1.0.1/):

- `subject-info.csv`: one row per patient (992), `;`-separated (a `,`-separated copy is read
  too), with `Patient ID`, `Cause of death` (0 survivor, 1 non-cardiac death, 3 sudden cardiac
  death, 6 / 7 pump-failure death), `Age`, `Gender (male=1)`, ... (decimal commas are read as
  decimal points);
- `Holter_ECG/<Patient ID>.{hea,dat}`: the 24 h Holter of each patient who has one (936 of 992),
  WFDB at 200 Hz with 2 or 3 channels. The paper's code reads `<Holter_ECG>/<subj_id>` and
  drops the patients listed in its `music_missing_files.txt`; here a patient without the header
  is skipped `missing_header`, which drops the same patients.

Labels as the paper's `MusicDataModule`: `Cause of death` {0: 0, 1: 1, 3: 2, 6: 3, 7: 3}; any
other value (or none) is skipped `missing_label`. Split by row position as the paper's code,
after those two removals: the first `int(0.7 n)` rows train, up to `int(0.8 n)` validation, the
rest test (CSV order, not shuffled; patients are rows, so it is patient-level).

The window (the paper's `MusicDataset`, channel 0): samples `[start, start + 10 s * fs)` with
`start = 0, stride, 2 stride, ...` (at most `max_tries` = 10 windows; `stride` = 5000 samples,
the released code's step), the first window that is *valid*: fewer than 10 % of its samples
exactly 0, fewer than 10 % NaN and a standard deviation (mV, NaN ignored) of at least 0.01. Only
those windows' samples are read (`wfdb.rdrecord(sampfrom=, sampto=)`; the Holters are about
17 M samples each). A patient without a valid window is skipped `no_valid_window` (the released
code then falls back to 25 s squeezed into 12,500 samples, which is not reproduced). The
validity check runs on the stored 200 Hz samples, whereas the released code checks after its
FFT resampling to 500 Hz, where runs of exact zeros rarely stay exactly 0.

Stored: channel 0 in lead I's column of the shared `clef_jax.data.schema.record_features` at the
native 200 Hz, bit-exact (2000 samples); resampling to 500 Hz (5000 samples) belongs to the
evaluation input pipeline, and the paper uses neither a filter nor a normalisation here. Plus
`label`, `cause_of_death` (the raw code), `window_start` (first sample), `window_try` (0-based)
and `channel_name`. `record_id` = `patient_id` = `Patient ID`; `metadata` holds age and sex.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib

import numpy as np
import tensorflow_datasets as tfds

from clef_jax import build_report as br
from clef_jax.data import schema
from clef_jax.data.wfdb_header import read_header
from clef_jax.data.wfdb_io import read_single_lead
from clef_jax.data.windows import cut_windows

SUBJECT_INFO = "subject-info.csv"
HOLTER_DIR = "Holter_ECG"
LEAD = "I"
OUTCOME_CLASSES = {0: 0, 1: 1, 3: 2, 6: 3, 7: 3}
CLASS_NAMES = ("survivor", "non-cardiac death", "sudden cardiac death", "pump-failure death")
SPLIT_FRACTIONS = (0.7, 0.8)  # train end, validation end.


def _number(value) -> float:
  text = str(value).strip().replace(",", ".")
  try:
    x = float(text)
  except ValueError:
    return math.nan
  return x if math.isfinite(x) else math.nan


def row_splits(n: int) -> list[str]:
  """Split of each usable row: `[0, int(.7 n))` train, `[int(.7 n), int(.8 n))` validation."""
  a, b = int(SPLIT_FRACTIONS[0] * n), int(SPLIT_FRACTIONS[1] * n)
  return ["train"] * a + ["validation"] * (b - a) + ["test"] * (n - b)


def window_is_valid(
  x_mv: np.ndarray, *, zero_fraction: float = 0.1, nan_fraction: float = 0.1, min_std: float = 0.01
) -> bool:
  """The paper's rule: < 10 % exact zeros, < 10 % NaN, std >= 0.01 (the paper's `is_valid_signal`
  and `is_flat_signal`)."""
  x = np.asarray(x_mv, np.float64)
  if x.size == 0:
    return False
  nan = np.isnan(x)
  if np.mean(x == 0) >= zero_fraction or np.mean(nan) >= nan_fraction:
    return False
  return bool(np.nanstd(x) >= min_std)


@dataclasses.dataclass
class Config(tfds.core.BuilderConfig):
  """Attributes: the window search (see the module doc)."""

  channel: int = 0
  window_seconds: float = 10.0
  stride: int = 5000
  max_tries: int = 10
  zero_fraction: float = 0.1
  nan_fraction: float = 0.1
  min_std: float = 0.01


def find_window(path: pathlib.Path, cfg: Config):
  """`(Ecg of the first valid window, its start, its try)`; `no_valid_window` if none."""
  header = read_header(path)
  size = int(round(cfg.window_seconds * float(header.fs)))
  tried = []
  for k in range(cfg.max_tries):
    start = k * cfg.stride
    if start + size > (header.sig_len or 0):
      break
    rec = read_single_lead(
      path, lead=LEAD, sampfrom=start, sampto=start + size, header=header, channel=cfg.channel
    )
    x = rec.physical()[:, schema.lead_index(LEAD)]
    if window_is_valid(
      x, zero_fraction=cfg.zero_fraction, nan_fraction=cfg.nan_fraction, min_std=cfg.min_std
    ):
      return rec, start, k, str(header.sig_name[cfg.channel])
    tried.append(start)
  raise br.RecordError(br.NO_VALID_WINDOW, f"windows at {tried or 'none'} of {header.sig_len}")


class Builder(br.ReportingBuilder, tfds.core.GeneratorBasedBuilder):
  """MUSIC Holter windows with the 4-class outcome."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release (music-sudden-cardiac-death 1.0.1)."}
  BUILDER_CONFIGS = [Config(name="default", description="Channel 0, first valid 10 s window.")]
  DEFAULT_CONFIG_NAME = "default"
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Download https://physionet.org/content/music-sudden-cardiac-death/1.0.1/ (subject-info.csv and
  Holter_ECG/) and pass its folder as --manual_dir.
  """

  def _info(self) -> tfds.core.DatasetInfo:
    listing = ", ".join(f"{i} {n}" for i, n in enumerate(CLASS_NAMES))
    return self.dataset_info_from_configs(
      features=schema.record_features(
        label=tfds.features.Scalar(dtype=np.int64, doc=f"Outcome class: {listing}."),
        cause_of_death=tfds.features.Scalar(dtype=np.int64, doc="Raw `Cause of death`."),
        window_start=tfds.features.Scalar(dtype=np.int64, doc="First sample of the window."),
        window_try=tfds.features.Scalar(dtype=np.int64, doc="Which window was valid (0..)."),
        channel_name=tfds.features.Text(doc="Name of the Holter channel stored."),
      ),
      metadata=tfds.core.MetadataDict(classes=list(CLASS_NAMES)),
      homepage="https://physionet.org/content/music-sudden-cardiac-death/1.0.1/",
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    import pandas as pd  # Lazy.

    root = pathlib.Path(dl_manager.manual_dir)
    info = root / SUBJECT_INFO
    if not info.is_file():
      raise FileNotFoundError(
        f"{info} not found: pass the MUSIC 1.0.1 folder (subject-info.csv, "
        "Holter_ECG/) as --manual_dir."
      )
    first = info.read_text(errors="replace").splitlines()[:1]
    sep = ";" if first and ";" in first[0] else ","
    table = pd.read_csv(info, sep=sep, dtype=str, keep_default_na=False)
    table.columns = [str(c).strip() for c in table.columns]
    for column in ("Patient ID", "Cause of death"):
      if column not in table.columns:
        raise ValueError(f"{info}: no `{column}` column (columns: {list(table.columns)[:12]})")
    report, usable, seen = self.report, [], set()
    for row in table.to_dict("records"):
      pid = str(row["Patient ID"]).strip()
      if not pid:
        report.skipped(br.INVALID_ENTRY, "?", f"{SUBJECT_INFO} row without Patient ID")
        continue
      if pid in seen:
        report.skipped(br.DUPLICATE_RECORD, pid, SUBJECT_INFO)
        continue
      seen.add(pid)
      path = root / HOLTER_DIR / pid
      if not path.with_name(pid + ".hea").is_file():
        report.skipped(br.MISSING_HEADER, pid, f"no {HOLTER_DIR}/{pid}.hea")
        continue
      code = _number(row["Cause of death"])
      if math.isnan(code) or int(code) != code or int(code) not in OUTCOME_CLASSES:
        report.skipped(br.MISSING_LABEL, pid, f"Cause of death={row['Cause of death']!r}")
        continue
      usable.append((pid, int(code), row, path))
    todo = {"train": [], "validation": [], "test": []}
    for item, split in zip(usable, row_splits(len(usable))):
      todo[split].append(item)
    return {split: self._generate_examples(items, split) for split, items in todo.items() if items}

  def _generate_examples(self, items, split):
    from clef_jax.data import metadata as meta_lib  # Lazy.

    report, cfg = self.report, self.builder_config
    for pid, code, row, path in items:
      try:
        rec, start, k, channel_name = find_window(path, cfg)
        (window,) = cut_windows(rec, window_seconds=rec.signal.shape[0] / rec.sampling_rate)
      except br.RecordError as e:
        report.skipped(e.reason, pid, e.detail)
        continue
      except Exception as e:  # Never let one record stop a build.
        report.skipped(br.READ_ERROR, pid, f"{type(e).__name__}: {e}")
        continue
      report.flagged_all(pid, rec.flags)
      report.kept(pid, 1, split=split)
      yield (
        pid,
        {
          **window.features(),
          "record_id": pid,
          "patient_id": pid,
          "metadata": np.asarray(
            meta_lib.metadata_from_header(
              age=_number(row.get("Age", "")), sex=row.get("Gender (male=1)", "")
            ),
            np.float32,
          ),
          "label": np.int64(OUTCOME_CLASSES[code]),
          "cause_of_death": np.int64(code),
          "window_start": np.int64(start),
          "window_try": np.int64(k),
          "channel_name": channel_name,
        },
      )
