r"""Icentia11k (PhysioNet "icentia11k-continuous-ecg" 1.0): beat and rhythm windows per patient.

    python -m clef_jax.build icentia11k --config beat --manual_dir ~/icentia11k --data_dir OUT
    python -m clef_jax.build icentia11k --config rhythm --manual_dir ~/icentia11k --data_dir OUT

The downstream tasks "Icentia11k beat N/S/V" and "Icentia11k rhythm N/AFIB/AFL"
(`docs/method.md §F.2`, tasks 7 and 8). Layout read (https://physionet.org/content/
icentia11k-continuous-ecg/1.0/): `<manual_dir>/p<XX>/p<XXXXX>/` per patient, each with a `RECORDS`
file listing its segments (`p00000_s00`, ...) and per segment `p00000_s00.{hea,dat,atr}`: one
channel at 250 Hz (16-bit), about 70 minutes (2^20 samples), the reference annotations `.atr`
holding one beat label per beat (symbol `N` normal, `S` supraventricular premature, `V`
ventricular premature, `Q` unclassifiable) and rhythm changes as `+` annotations whose `aux_note`
is `(N`, `(AFIB` or `(AFL`. The patients are the lines of `<manual_dir>/RECORDS` (`p00/p00000/`),
or, without that file, every `p*/p*/` folder holding a `RECORDS` file, sorted.

The archive is 1.1 TB, so only annotation files (small) are read whole; of the signal only the
stored windows' samples are read (`clef_jax.data.windows.annotated_windows`). Per patient and
config:

- `beat`: for each of N, S, V (Q is excluded), one window of 2500 samples (10 s) centred on a
  beat of that type drawn at random, from the first segment (in `RECORDS` order) that has such a
  beat at least 1250 samples from both ends;
- `rhythm`: for each of `(N`, `(AFIB`, `(AFL`, one window of 2500 samples starting at a random
  onset of that rhythm, from the first segment where it fits;

so a patient gives at most 3 examples (one per class). The draw uses
`numpy.random.default_rng((window_seed, patient number))`, so it depends only on the patient,
not on build order or workers. Split by patient: the patient list is shuffled with Python's
`random.Random(split_seed=42).shuffle` and cut 70 / 15 / 15 (`int(0.7 n)` train, `int(0.15 n)`
validation, the rest test), as the paper's `preprocess_icentia.py` does with `random.seed(42)`.
The split is over the listed patients, so a partial download (the top-level `RECORDS` lists all
11,000; absent folders are skipped `invalid_list_entry`) puts each patient where the full build
would.

Stored per example: the shared `clef_jax.data.schema.record_features` with the single channel in
lead I's column (the CardioSTAT patch sits in a modified lead I position), at the native 250 Hz: the
band-pass (0.67-40 Hz at 250 Hz), resampling to 500 Hz (5000 samples) and z-score of
`docs/method.md §F.2` belong to the evaluation input pipeline. Plus `label` (class index),
`label_name` (`N`/`S`/`V` or `N`/`AFIB`/`AFL`), `segment`, `sample` (the annotation's sample in
the segment) and `start` (the window's first sample). `record_id` is `<segment>:<label_name>`,
`patient_id` the patient folder (`p00000`); `metadata` is all NaN (the archive has none).

Assumptions where the paper's code is silent or differs: windows are drawn only among annotations
whose window fits the segment (the released code draws first and silently drops a class whose
draw falls within 5 s of an edge); the rhythm window starts at the onset as the method describes
(the released rhythm loader centres it and compares `aux_note` without the `(`, which never
matches). A patient without `RECORDS` is skipped `invalid_list_entry`, one without any window
`no_valid_window` (the classes it lacks are the normal case: most patients never have AFL);
unreadable segments are flagged `segment_unreadable` on a kept patient.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
import random
import zlib

import numpy as np
import tensorflow_datasets as tfds

from clef_jax import build_report as br
from clef_jax.data import schema
from clef_jax.data.windows import annotated_windows, imap_ordered, starcall

FS = 250
WINDOW_SAMPLES = 2500
SPLIT_FRACTIONS = (0.7, 0.15)  # train, validation; test is the rest.
SEGMENT_UNREADABLE = "segment_unreadable"
TASKS = {
  # config -> (annotation values, class names, annotation field, window anchor)
  "beat": (("N", "S", "V"), ("N", "S", "V"), "symbol", "center"),
  "rhythm": (("(N", "(AFIB", "(AFL"), ("N", "AFIB", "AFL"), "aux_note", "start"),
}


def read_records_file(path: pathlib.Path) -> list[str]:
  """Non-empty lines of a WFDB `RECORDS` file."""
  return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def patient_dirs(root: pathlib.Path) -> list[str]:
  """Patient folders relative to `root` (`p00/p00000`), from `RECORDS` or by globbing."""
  top = root / "RECORDS"
  if top.is_file():
    return [line.strip("/") for line in read_records_file(top)]
  return sorted(p.parent.relative_to(root).as_posix() for p in root.glob("p*/p*/RECORDS"))


def patient_splits(patients: list[str], seed: int = 42) -> dict[str, str]:
  """Patient -> split: `random.Random(seed).shuffle`, then 70 / 15 / 15 by position."""
  order = list(patients)
  random.Random(seed).shuffle(order)
  n_train = int(SPLIT_FRACTIONS[0] * len(order))
  n_val = int(SPLIT_FRACTIONS[1] * len(order))
  return {
    p: ("train" if i < n_train else "validation" if i < n_train + n_val else "test")
    for i, p in enumerate(order)
  }


def patient_number(patient: str) -> int:
  """`p01234` -> 1234 (a CRC of the name for names that are not `p` + digits)."""
  digits = patient.lstrip("pP")
  return int(digits) if digits.isdigit() else zlib.crc32(patient.encode())


@dataclasses.dataclass
class Config(tfds.core.BuilderConfig):
  """Attributes: task: "beat" or "rhythm"; split_seed / window_seed: see the module doc."""

  task: str = "beat"
  split_seed: int = 42
  window_seed: int = 42


class Builder(br.ReportingBuilder, tfds.core.GeneratorBasedBuilder):
  """Icentia11k beat / rhythm windows."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release (icentia11k-continuous-ecg 1.0)."}
  BUILDER_CONFIGS = [
    Config(
      name="beat",
      task="beat",
      description="One 10 s window centred on a random N, S and V beat per patient.",
    ),
    Config(
      name="rhythm",
      task="rhythm",
      description="One 10 s window from a random (N, (AFIB and (AFL onset per patient.",
    ),
  ]
  DEFAULT_CONFIG_NAME = "beat"
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Download https://physionet.org/content/icentia11k-continuous-ecg/1.0/ (open access; 1.1 TB, or
  a subset of patient folders) and pass the folder holding `p00/`, `p01/`, ... (and the top-level
  `RECORDS`) as `--manual_dir`.
  """

  def _info(self) -> tfds.core.DatasetInfo:
    names = TASKS[self.builder_config.task][1]
    listing = ", ".join(f"{i} {n}" for i, n in enumerate(names))
    return self.dataset_info_from_configs(
      features=schema.record_features(
        label=tfds.features.Scalar(dtype=np.int64, doc=f"Class index: {listing}."),
        label_name=tfds.features.Text(doc=f"One of {', '.join(names)}."),
        segment=tfds.features.Text(doc="Segment record name, e.g. p00000_s00."),
        sample=tfds.features.Scalar(dtype=np.int64, doc="The annotation's sample."),
        start=tfds.features.Scalar(dtype=np.int64, doc="First sample of the window."),
      ),
      metadata=tfds.core.MetadataDict(classes=list(names)),
      homepage="https://physionet.org/content/icentia11k-continuous-ecg/1.0/",
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    root = pathlib.Path(dl_manager.manual_dir)
    patients = patient_dirs(root)
    if not patients:
      raise FileNotFoundError(
        f"{root}: no patients (neither a RECORDS file nor p*/p*/RECORDS folders). Pass the "
        "icentia11k-continuous-ecg 1.0 folder as --manual_dir."
      )
    splits = patient_splits(patients, self.builder_config.split_seed)
    by_split = {"train": [], "validation": [], "test": []}
    for patient in patients:  # Listing order within a split.
      by_split[splits[patient]].append(patient)
    return {
      split: self._generate_examples(root, items, split)
      for split, items in by_split.items()
      if items
    }

  def _generate_examples(self, root: pathlib.Path, patients: list[str], split: str):
    cfg = self.builder_config
    values, names, field, anchor = TASKS[cfg.task]
    report = self.report
    todo = []
    for patient in patients:
      folder = root / patient
      name = pathlib.PurePosixPath(patient).name
      records = folder / "RECORDS"
      if not records.is_file():  # A partial download lists patients it does not hold.
        report.skipped(
          br.INVALID_ENTRY, name, f"{patient}/{'RECORDS' if folder.is_dir() else ''} missing"
        )
        continue
      todo.append((name, [folder / seg for seg in read_records_file(records)]))
    # Partials of clef_jax functions (not of this module's) so spawned workers can unpickle them.
    pick = functools.partial(
      starcall,
      functools.partial(
        annotated_windows,
        classes=values,
        field=field,
        anchor=anchor,
        window=WINDOW_SAMPLES,
        lead="I",
      ),
    )
    results = imap_ordered(
      pick,
      (((paths,), {"seed": (cfg.window_seed, patient_number(name))}) for name, paths in todo),
      num_workers=self.num_workers,
    )
    for (name, paths), (windows, errors) in zip(todo, results):
      if not windows:
        detail = "; ".join(f"{paths[r].name}: {e}" for r, e in errors[:3]) or (
          f"no {'/'.join(names)} annotation with a full window"
        )
        report.skipped(br.NO_VALID_WINDOW, name, detail)
        continue
      if errors:
        report.flagged(
          SEGMENT_UNREADABLE, name, "; ".join(f"{paths[r].name}: {e}" for r, e in errors[:3])
        )
      for w in windows:
        report.flagged_all(name, w.flags)
      report.kept(name, len(windows), split=split)
      for w in windows:
        segment = paths[w.record].name
        yield (
          f"{name}/{names[w.label]}",
          {
            **w.window.features(),
            "record_id": f"{segment}:{names[w.label]}",
            "patient_id": name,
            "metadata": np.full(schema.NUM_METADATA, np.nan, np.float32),
            "label": np.int64(w.label),
            "label_name": names[w.label],
            "segment": segment,
            "sample": np.int64(w.sample),
            "start": np.int64(w.start),
          },
        )
