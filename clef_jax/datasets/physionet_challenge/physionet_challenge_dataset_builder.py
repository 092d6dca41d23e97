"""PhysioNet/CinC Challenge 2020/2021 12-lead ECGs (`.hea` + `.mat`/`.dat`) as 10 s windows.

Build (the archive needs no credentials, but its layout varies, so it is read from a directory):

    python -m clef_jax.build physionet_challenge --manual_dir path/to/training --data_dir OUT

Any directory tree works: every `*.hea` below `--manual_dir` is one record. What is stored, per
window (see `docs/datasets.md`):

- the shared `clef_jax.schema.record_features` at 500 Hz (other rates are resampled);
- `dx`: the header's `# Dx:` as SNOMED CT codes (CPSC-2018 abbreviations such as `AF`, `I-AVB`
  mapped to codes by `clef_jax.data.dx`; unmappable entries are dropped and flagged);
- `age` (NaN if unknown), `sex` (`F`, `M` or empty), `source` (the record id's letter prefix, e.g.
  `E` Georgia, `HR` PTB-XL, `JS` Chapman/Ningbo, `A`/`Q` CPSC, `I` INCART, `S` PTB),
  `window_index`.

The format has no patient ids, so `patient_id` is the record id, and everything goes to a single
`train` split: a record-level split would leak patients between splits, and the downstream tasks
that use these archives bring their own split files keyed by record id.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
import re

import numpy as np
import tensorflow_datasets as tfds

from clef_jax import build_report as br
from clef_jax.data import schema
from clef_jax.data.dx import dx_abbreviations, dx_table, header_fields
from clef_jax.data.windows import imap_ordered, record_loader


def source_of(record_id: str) -> str:
  """The letter prefix of a Challenge record id (`HR06000` -> `HR`)."""
  m = re.match(r"[A-Za-z]+", record_id)
  return m.group(0) if m else ""


@dataclasses.dataclass
class Config(tfds.core.BuilderConfig):
  """How records become examples.

  Attributes:
    windows: "first" (one 10 s window per record) or "all" (every complete 10 s window).
    short_records: "skip" records shorter than 10 s, or "pad" them with 0 mV.
  """

  windows: str = "first"
  short_records: str = "skip"


class Builder(br.ReportingBuilder, tfds.core.GeneratorBasedBuilder):
  """PhysioNet/CinC Challenge 2020/2021 records."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
    Config(name="first_window", description="The first 10 s window of each record."),
    Config(
      name="all_windows",
      windows="all",
      description="Every complete non-overlapping 10 s window of each record.",
    ),
    Config(
      name="first_window_padded",
      short_records="pad",
      description="The first 10 s window; shorter records are padded with 0 mV.",
    ),
  ]
  DEFAULT_CONFIG_NAME = "first_window"
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Download the Challenge training data (e.g. https://physionet.org/content/challenge-2021/1.0.3/
  `training/`, or the 2020 archives) and pass the folder as `--manual_dir`. Any tree of `.hea`
  files with their `.mat`/`.dat` signal files works; sub-folders are searched recursively.
  """

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
      features=schema.record_features(
        dx=tfds.features.Sequence(
          tfds.features.Scalar(dtype=np.int64), doc="SNOMED CT codes from `# Dx:`."
        ),
        age=tfds.features.Scalar(dtype=np.float32, doc="Years; NaN if unknown."),
        sex=tfds.features.Text(doc="'F', 'M' or '' (unknown)."),
        source=tfds.features.Text(doc="Letter prefix of the record id."),
        window_index=tfds.features.Scalar(dtype=np.int32, doc="10 s window in the record."),
      ),
      metadata=tfds.core.MetadataDict(
        dx_names={row["snomed_code"]: row["dx_name"] for row in dx_table()}
      ),
      homepage="https://physionet.org/content/challenge-2021/",
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    return {"train": self._generate_examples(pathlib.Path(dl_manager.manual_dir))}

  def _generate_examples(self, root: pathlib.Path):
    from clef_jax.data import metadata as meta_lib  # Lazy.

    report = self.report
    cfg = self.builder_config
    abbreviations = dx_abbreviations()
    # Sorted relative paths make the duplicate rule (first one wins) deterministic.
    headers, seen = [], set()
    for header in sorted(root.rglob("*.hea"), key=lambda p: p.relative_to(root).as_posix()):
      if header.stem in seen:
        report.skipped(br.DUPLICATE_RECORD, header.stem, header.relative_to(root).as_posix())
      else:
        seen.add(header.stem)
        headers.append(header)
    load = record_loader(windows=cfg.windows, short_records=cfg.short_records)
    loaded = imap_ordered(
      load, ([h.with_suffix("")] for h in headers), num_workers=self.num_workers
    )
    for header, rec in zip(headers, loaded):
      record_id = header.stem
      for _, error in rec.errors:
        report.skipped(error.reason, record_id, error.detail)
      if rec.index is None:
        continue
      windows = rec.windows

      age, sex, dx = header_fields(rec.comments, record_id, report, abbreviations)
      report.flagged_all(record_id, rec.flags)
      report.kept(record_id, len(windows), split="train")

      common = {
        "record_id": record_id,
        "patient_id": record_id,  # The format has no patient ids.
        "metadata": np.asarray(meta_lib.metadata_from_header(age=age, sex=sex), np.float32),
        "dx": np.asarray(dx, np.int64),
        "age": np.float32(age if math.isfinite(age) else np.nan),
        "sex": sex or "",
        "source": source_of(record_id),
      }
      for window in windows:
        yield (
          f"{record_id}/{window.index}",
          {**common, **window.features(), "window_index": np.int32(window.index)},
        )
