"""The bad-record policy every dataset builder shares, and the `build_report.json` it produces.

A build never crashes on one record and never drops one silently. Each record ends up in exactly one
of three buckets, and every decision is counted (with a few example record ids) in the report that
is written into the dataset's version directory next to `dataset_info.json`:

- **kept**: at least one example was written. Problems that did not stop it are *flags*
  (e.g. an all-NaN lead, which is kept with `lead_mask == False`).
- **skipped**: the record could not be stored; the *reason* is one of `SKIP_REASONS`.
- **filtered**: deliberately not selected (e.g. a patient's second record under
  `one_per_patient`); only counted.

| problem                                   | outcome                                          |
|-------------------------------------------|--------------------------------------------------|
| header cannot be parsed / bad gain        | skip `malformed_header`                          |
| listed record without a `.hea` file       | skip `missing_header`                            |
| signal file named by the header is absent | skip `missing_signal_file`                       |
| signal file shorter than the header says  | skip `truncated_signal`                          |
| any other read error                      | skip `read_error`                                |
| no channel named like one of the 12 leads | skip `no_standard_leads`                         |
| sampling rate zero / negative / not finite| skip `unsupported_sampling_rate`                 |
| other sampling rate                       | resampled, flag `resampled`                      |
| shorter than one 10 s window              | skip `too_short` (or zero-pad: flag `zero_padded`)|
| every lead all-NaN or flat                | skip `all_leads_missing`                         |
| record id seen before                     | second one skipped `duplicate_record_id`         |
| index-CSV row without id / path / fold    | skip `invalid_list_entry`                        |
| no window the task's rule accepts         | skip `no_valid_window`                           |
| the lead the task reads is not recorded   | skip `missing_lead`                              |
| no label for any of the dataset's tasks   | skip `missing_label`                             |
| channel with an unknown name              | channel dropped, flag `unknown_lead_name`        |
| Frank lead (vx, vy, vz)                   | channel dropped, flag `extra_lead_dropped`       |
| fewer than 12 standard leads              | flag `missing_leads` (`lead_mask` False)         |
| lead all-NaN / flat (std < 1e-6 mV)       | flag `all_nan_lead` / `flat_lead`, `lead_mask` False |
| metadata value / row that cannot be parsed| metadata NaN, flag `metadata_unparsable`         |

Flags are counted once per record (a record with two flat leads counts once under `flat_lead`; the
example's `detail` lists the leads).
"""

from __future__ import annotations

import collections
import datetime
import json
import os
import pathlib
import time
from typing import Any

from clef_jax import files

REPORT_FILENAME = "build_report.json"

# Skip reasons: the record is not stored.
MALFORMED_HEADER = "malformed_header"
MISSING_HEADER = "missing_header"
MISSING_SIGNAL_FILE = "missing_signal_file"
TRUNCATED_SIGNAL = "truncated_signal"
READ_ERROR = "read_error"
NO_STANDARD_LEADS = "no_standard_leads"
UNSUPPORTED_SAMPLING_RATE = "unsupported_sampling_rate"
TOO_SHORT = "too_short"
ALL_LEADS_MISSING = "all_leads_missing"
DUPLICATE_RECORD = "duplicate_record_id"
INVALID_ENTRY = "invalid_list_entry"
NO_VALID_WINDOW = "no_valid_window"
MISSING_LEAD = "missing_lead"
MISSING_LABEL = "missing_label"
SKIP_REASONS = (
  MALFORMED_HEADER,
  MISSING_HEADER,
  MISSING_SIGNAL_FILE,
  TRUNCATED_SIGNAL,
  READ_ERROR,
  NO_STANDARD_LEADS,
  UNSUPPORTED_SAMPLING_RATE,
  TOO_SHORT,
  ALL_LEADS_MISSING,
  DUPLICATE_RECORD,
  INVALID_ENTRY,
  NO_VALID_WINDOW,
  MISSING_LEAD,
  MISSING_LABEL,
)

# Flags: the record is stored, something about it is marked.
UNKNOWN_LEAD_NAME = "unknown_lead_name"
EXTRA_LEAD = "extra_lead_dropped"
DUPLICATE_LEAD = "duplicate_lead"
MISSING_LEADS = "missing_leads"
ALL_NAN_LEAD = "all_nan_lead"
FLAT_LEAD = "flat_lead"
RESAMPLED = "resampled"
REQUANTISED = "requantised"
CLIPPED = "clipped_samples"
ZERO_PADDED = "zero_padded"
WINDOW_DROPPED = "window_all_leads_missing"
UNKNOWN_UNITS = "unknown_units"
METADATA_UNPARSABLE = "metadata_unparsable"
METADATA_MISSING = "metadata_missing"
UNKNOWN_LABEL = "unknown_label"


class RecordError(Exception):
  """A record that cannot be stored; `reason` is its key in the build report."""

  def __init__(self, reason: str, detail: str = ""):
    super().__init__(reason, detail)  # Both in `args`, so it survives pickling (worker pools).
    self.reason = reason
    self.detail = detail

  def __str__(self) -> str:
    return f"{self.reason}: {self.detail}" if self.detail else self.reason


class _Bucket:
  """A count plus the first few (record_id, detail) examples."""

  def __init__(self, max_examples: int):
    self.count = 0
    self.examples: list[dict[str, str]] = []
    self._max_examples = max_examples

  def add(self, record_id: str, detail: str):
    self.count += 1
    if len(self.examples) < self._max_examples:
      self.examples.append({"record_id": record_id, "detail": detail})

  def to_dict(self) -> dict[str, Any]:
    return {"count": self.count, "examples": self.examples}


class BuildReport:
  """Counts what a build kept, skipped, flagged and filtered.

  Builders call `kept`, `skipped`, `flagged` and `filtered` from `_generate_examples`; the
  `ReportingBuilder` mixin writes the result. Plain Python, so it can be tested on its own.
  """

  def __init__(
    self,
    *,
    dataset: str,
    config: str | None = None,
    version: str | None = None,
    max_examples: int = 5,
  ):
    self.dataset = dataset
    self.config = config
    self.version = version
    self.source: str | None = None
    self.max_examples = max_examples
    self._start = time.monotonic()
    self._started_at = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    self.duration_s: float | None = None
    self.records_kept = 0
    self.examples_per_split: collections.Counter[str] = collections.Counter()
    self.windows_per_record: collections.Counter[int] = collections.Counter()
    self.skips: dict[str, _Bucket] = {}
    self.flags: dict[str, _Bucket] = {}
    self.filters: collections.Counter[str] = collections.Counter()

  def kept(self, record_id: str, num_examples: int, *, split: str):
    """A record of which `num_examples` examples (windows) were written to `split`."""
    del record_id  # Kept records are only counted.
    self.records_kept += 1
    self.examples_per_split[split] += num_examples
    self.windows_per_record[num_examples] += 1

  def skipped(self, reason: str, record_id: str, detail: str = ""):
    """A record that was not stored, with its `SKIP_REASONS` key."""
    self.skips.setdefault(reason, _Bucket(self.max_examples)).add(record_id, detail)

  def flagged(self, flag: str, record_id: str, detail: str = ""):
    """Something marked on a stored record (count once per record and flag)."""
    self.flags.setdefault(flag, _Bucket(self.max_examples)).add(record_id, detail)

  def flagged_all(self, record_id: str, flags: dict[str, str]):
    """`flagged` for each `flag -> detail` of a record."""
    for flag, detail in flags.items():
      self.flagged(flag, record_id, detail)

  def filtered(self, reason: str, count: int = 1):
    """Records deliberately left out by a selection rule (only counted)."""
    self.filters[reason] += count

  @property
  def records_skipped(self) -> int:
    return sum(b.count for b in self.skips.values())

  def finish(self):
    """Freezes the duration."""
    self.duration_s = round(time.monotonic() - self._start, 3)

  def to_dict(self) -> dict[str, Any]:
    duration = self.duration_s
    if duration is None:
      duration = round(time.monotonic() - self._start, 3)
    return {
      "dataset": self.dataset,
      "config": self.config,
      "version": self.version,
      "source": self.source,
      "started_at": self._started_at,
      "duration_s": duration,
      "records": {
        "seen": self.records_kept + self.records_skipped,
        "kept": self.records_kept,
        "skipped": self.records_skipped,
        "filtered": sum(self.filters.values()),
      },
      "examples": dict(sorted(self.examples_per_split.items())),
      "examples_total": sum(self.examples_per_split.values()),
      "windows_per_record": {str(k): v for k, v in sorted(self.windows_per_record.items())},
      "skipped": {k: b.to_dict() for k, b in sorted(self.skips.items())},
      "flags": {k: b.to_dict() for k, b in sorted(self.flags.items())},
      "filtered": dict(sorted(self.filters.items())),
    }

  def write(self, path: str | os.PathLike) -> pathlib.Path:
    """Writes the JSON atomically (temporary file, then rename) and returns its path."""
    return files.atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

  def summary(self) -> str:
    return summarize(self.to_dict())


def summarize(report: dict[str, Any]) -> str:
  """A few human-readable lines from a report dict (as written to `build_report.json`)."""
  name = report["dataset"] + (f"/{report['config']}" if report.get("config") else "")
  rec = report["records"]
  lines = [
    f"{name} {report.get('version') or ''}: {rec['kept']} of {rec['seen']} records kept, "
    f"{rec['skipped']} skipped, {rec['filtered']} filtered; "
    f"{report['examples_total']} examples {report['examples']} in {report['duration_s']:.1f} s",
    f"  windows per record: {report['windows_per_record']}",
  ]
  for title, key in (("skipped", "skipped"), ("flagged", "flags")):
    for reason, bucket in report[key].items():
      ids = ", ".join(e["record_id"] for e in bucket["examples"])
      lines.append(f"  {title} {reason}: {bucket['count']} (e.g. {ids})")
  for reason, count in report["filtered"].items():
    lines.append(f"  filtered {reason}: {count}")
  return "\n".join(lines)


class ReportingBuilder:
  """Mixin for `tfds.core.GeneratorBasedBuilder`s: one `BuildReport` per build.

  Use as `class Builder(build_report.ReportingBuilder, tfds.core.GeneratorBasedBuilder)` and feed
  `self.report` from `_generate_examples`; `num_workers` (a constructor keyword, `--option
  num_workers=N` on the command line) is for the builder to pass to `clef_jax.data.windows.imap_ordered`.

  TFDS runs `_download_and_prepare` with `self.data_dir` pointing at its `incomplete.*` directory
  and renames that directory only after this returns, so the report is inside the version
  directory exactly when the build is complete; a failed build leaves neither.
  """

  def __init__(self, *, num_workers: int = 0, **kwargs):
    """Args: num_workers: processes reading records (0: read in the building process)."""
    super().__init__(**kwargs)
    self.num_workers = int(num_workers)

  @property
  def report(self) -> BuildReport:
    if getattr(self, "_report", None) is None:
      self._report = BuildReport(
        dataset=self.name,
        config=self.builder_config.name if self.builder_config else None,
        version=str(self.version),
      )
    return self._report

  def _download_and_prepare(self, dl_manager, download_config=None, **kwargs):
    self._report = None  # A fresh report per build.
    report = self.report
    try:
      report.source = os.fspath(dl_manager.manual_dir)
    except Exception:  # Builders without MANUAL_DOWNLOAD_INSTRUCTIONS have no manual_dir.
      report.source = None
    super()._download_and_prepare(dl_manager, download_config, **kwargs)
    report.finish()
    report.write(pathlib.Path(self.data_dir) / REPORT_FILENAME)
