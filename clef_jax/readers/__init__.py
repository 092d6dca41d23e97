"""Reading ECG files of every supported kind as one-channel `Recording`s.

    for item in readers.open_inputs("holter/", lead="II"):
      if isinstance(item, readers.Skipped): print(item.message); continue
      x = item.read(0, int(10 * item.fs))          # mV, NaN = missing

Inputs (a path is a file, a WFDB record path with or without `.hea`, or a directory searched
recursively for all of them):

| kind | files | sampling rate, unit | channel names |
|---|---|---|---|
| WFDB (single-/multi-segment, any format wfdb reads) | `rec.hea` + signal files | header | header |
| EDF, EDF+, BDF, BDF+ | `.edf`, `.bdf`, `.rec` | per signal | labels |
| Apple Watch / Health ECG export | `.csv` with a `Sample Rate` line | header block | `Lead` line |
| plain CSV | `.csv`, one column per channel | `--fs`, `--unit` (needed) | header row or 0, 1, ... |
| numpy | `.npy` `(T,)`, `(N, T)` or `(N, T, 12)` | `--fs`, `--unit` (needed) | 12: `LEAD_ORDER` |

`lead` picks a standard lead through `core.LEAD_ALIASES` (MLII -> II, "Lead I" -> I, ...),
`channel` the file's own channel name or its index; units come from the file (uV, mV, V) and a
file whose unit is unknown is refused unless `unit` is given.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from collections.abc import Iterator

from clef_jax.readers import edf_files, text_files, wfdb_files
from clef_jax.readers.core import (  # noqa: F401  (the package's API)
  LEAD_ALIASES,
  MAX_FS,
  UNIT_TO_MV,
  InputError,
  Recording,
  check_lead,
  choose_channel,
  standard_lead,
)
from clef_jax.readers.text_files import from_array  # noqa: F401
from clef_jax.readers.windows import (  # noqa: F401
  SKIP_REASONS,
  Span,
  Windowing,
  count_windows,
  iter_windows,
  max_chunk_samples,
)

_FILE_SUFFIXES = (".hea", ".csv", ".npy") + edf_files.SUFFIXES


@dataclasses.dataclass(frozen=True)
class Skipped:
  """An input that could not be opened: its id, the reason key and a one-line message."""

  id: str
  reason: str
  message: str


@dataclasses.dataclass(frozen=True)
class Source:
  """One input file found under the path given: what kind it is and its id in outputs."""

  kind: str  # "wfdb" | "edf" | "csv" | "npy"
  path: pathlib.Path  # WFDB: the record path without extension.
  id: str


def _kind(path: pathlib.Path) -> str | None:
  suffix = path.suffix.lower()
  if suffix == ".hea":
    return "wfdb"
  if suffix in edf_files.SUFFIXES:
    return "edf"
  return {".csv": "csv", ".npy": "npy"}.get(suffix)


def find_inputs(path: str | os.PathLike) -> list[Source]:
  """The input files `path` names, sorted; InputError when there are none.

  A directory is searched recursively; the segments of multi-segment WFDB records are not
  records of their own and are left out.
  """
  path = pathlib.Path(path).expanduser()
  if path.is_dir():
    files = sorted(
      p
      for p in path.rglob("*")
      if p.is_file() and p.suffix.lower() in _FILE_SUFFIXES and p.suffix.lower() != ".npy"
    )
    segments = set()
    for p in files:
      if p.suffix.lower() == ".hea":
        segments.update(p.parent / s for s in wfdb_files.segment_names(p))
    out = []
    for p in files:
      kind = _kind(p)
      record = p.with_suffix("") if kind == "wfdb" else p
      if kind == "wfdb" and record in segments:
        continue
      out.append(Source(kind, record, p.relative_to(path).with_suffix("").as_posix()))
    if not out:
      raise InputError(f"{path}: no ECG files in it (WFDB .hea, EDF/BDF, CSV).", "unreadable")
    return out
  kind = _kind(path)
  if kind is None and path.with_name(path.name + ".hea").is_file():
    return [Source("wfdb", path, path.name)]  # A record path without extension.
  if kind is None:
    if not path.exists():
      raise InputError(f"{path}: no such file, directory or WFDB record.", "unreadable")
    raise InputError(
      f"{path}: unknown file kind (expected a WFDB record, .edf/.bdf, .csv, .npy or a directory).",
      "unreadable",
    )
  if not path.is_file():
    raise InputError(f"{path}: no such file.", "unreadable")
  record = path.with_suffix("") if kind == "wfdb" else path
  return [Source(kind, record, record.name if kind == "wfdb" else path.stem)]


def open_source(
  src: Source,
  *,
  lead: str | None = None,
  channel: str | int | None = None,
  fs: float | None = None,
  unit: str | None = None,
) -> list[Recording]:
  """The recordings of one input (several for an `(N, T)` array); raises InputError.

  `fs` overrides the file's sampling rate only for files that have none (CSV, `.npy`) or, for
  an Apple export, replaces its stated rate.
  """
  if src.kind == "wfdb":
    return [wfdb_files.open_record(src.path, rid=src.id, lead=lead, channel=channel, unit=unit)]
  if src.kind == "edf":
    return [edf_files.open_file(src.path, rid=src.id, lead=lead, channel=channel, unit=unit)]
  if src.kind == "csv":
    return [text_files.open_csv(src.path, rid=src.id, lead=lead, channel=channel, fs=fs, unit=unit)]
  return text_files.open_npy(src.path, lead=lead, channel=channel, fs=fs, unit=unit)


def open_inputs(
  path: str | os.PathLike,
  *,
  lead: str | None = None,
  channel: str | int | None = None,
  fs: float | None = None,
  unit: str | None = None,
) -> Iterator[Recording | Skipped]:
  """Every recording under `path`, opened lazily one at a time; unusable ones as `Skipped`.

  Raises:
    InputError: `path` names nothing readable, or `lead` is not a standard lead.
  """
  lead = check_lead(lead)
  for src in find_inputs(path):
    try:
      yield from open_source(src, lead=lead, channel=channel, fs=fs, unit=unit)
    except InputError as e:
      yield Skipped(src.id, e.reason, str(e))
