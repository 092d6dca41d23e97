"""WFDB records (single- and multi-segment, any format `wfdb` decodes) as `Recording`s.

Chunks are read with `wfdb.rdrecord(sampfrom=, sampto=, channels=[j])`, so only the requested
range of one channel is decoded. A multi-segment record is mapped segment by segment: each
segment's own header says where (and whether) the channel is in it and in which unit; null
segments (`~`) and segments without the channel read as NaN (missing).
"""

from __future__ import annotations

import os
import pathlib
import re

import numpy as np

from clef_jax import build_report as br
from clef_jax.data import wfdb_signal
from clef_jax.readers import core


def _rdheader(path: pathlib.Path):
  import wfdb  # Lazy.

  hea = path.with_name(path.name + ".hea")
  if not hea.is_file():
    raise core.InputError(f"{hea}: no such WFDB header.", "unreadable")
  try:
    return wfdb.rdheader(os.fspath(path))
  except Exception as e:  # wfdb raises many types (HeaderSyntaxError, IndexError, ValueError...).
    raise core.InputError(
      f"{hea}: unreadable WFDB header ({type(e).__name__}: {e}).", "unreadable"
    ) from None


_FS_FIELD = re.compile(r"^(\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?(?:/[^(\s]+)?(?:\([^)]*\))?$")


def _check_record_line(path: pathlib.Path) -> None:
  """Refuses a record line whose rate or length field wfdb would misread silently.

  `wfdb.rdheader` reads `rec 1 -250 3000` as 250 Hz and `rec 1 nan 3000` as 250 Hz with no
  length; the fields are checked here on the text (WFDB header spec: `name[/segments] signals
  [rate[/counter[(base)]] [length [...]]]`).
  """
  hea = path.with_name(path.name + ".hea")
  try:
    text = hea.read_bytes().decode("utf-8", errors="replace")
  except OSError as e:
    raise core.InputError(f"{hea}: cannot read ({e.strerror}).", "unreadable") from None
  lines = [ln.split("#", 1)[0].split() for ln in text.splitlines()]
  fields = next((ln for ln in lines if ln), [])
  if len(fields) >= 3 and not _FS_FIELD.match(fields[2]):
    raise core.InputError(
      f"{hea}: sampling rate field {fields[2]!r} is not a positive number; fix the header.",
      "bad_sampling_rate",
    )
  if len(fields) >= 4 and not fields[3].isdigit():
    raise core.InputError(
      f"{hea}: length field {fields[3]!r} is not a sample count; fix the header.", "unreadable"
    )


def _units(header, j: int, *, where: str, unit: str | None) -> float:
  if unit is not None:
    return core.unit_scale(unit, where=where)
  # An absent units field means mV (WFDB header spec), which wfdb reports as "mV" or None.
  u = (header.units or [None] * header.n_sig)[j]
  return core.unit_scale(u or "mV", where=f"{where} channel {header.sig_name[j]!r}")


def _check_files(header, record_dir: pathlib.Path, j: int, *, where: str) -> None:
  """InputError when the channel's signal file is absent or shorter than the header says."""
  try:
    wfdb_signal.check_signal_files(header, record_dir, [j])
  except br.RecordError as e:
    reason = "truncated" if e.reason == br.TRUNCATED_SIGNAL else "unreadable"
    what = "signal file shorter than the header says" if reason == "truncated" else e.reason
    raise core.InputError(f"{where}: {what} ({e.detail}).", reason) from None


def _read_range(path: pathlib.Path, j: int, start: int, stop: int, *, where: str) -> np.ndarray:
  import wfdb  # Lazy.

  try:
    rec = wfdb.rdrecord(
      os.fspath(path), sampfrom=start, sampto=stop, channels=[j], physical=True, return_res=64
    )
  except Exception as e:
    raise core.InputError(
      f"{where}: cannot read samples {start}-{stop} ({type(e).__name__}: {e}).", "truncated"
    ) from None
  return rec.p_signal[:, 0]


def open_record(
  path: pathlib.Path,
  *,
  rid: str,
  lead: str | None = None,
  channel: str | int | None = None,
  unit: str | None = None,
) -> core.Recording:
  """Opens the WFDB record at `path` (without extension) on one channel.

  Raises:
    core.InputError: unreadable header, bad sampling rate or unit, no such channel, missing or
      truncated signal file.
  """
  import wfdb  # Lazy.

  where = f"{path}.hea"
  header = _rdheader(path)
  _check_record_line(path)
  fs = core.check_fs(header.fs, where=where)
  if isinstance(header, wfdb.MultiRecord):
    return _open_multi(path, header, fs, rid=rid, lead=lead, channel=channel, unit=unit)
  if not header.n_sig or not header.sig_len:
    raise core.InputError(f"{where}: no samples in the record.", "short")
  choice = core.choose_channel(header.sig_name or [], where=where, lead=lead, channel=channel)
  scale = _units(header, choice.index, where=where, unit=unit)
  _check_files(header, path.parent, choice.index, where=where)

  def reader(start: int, stop: int) -> np.ndarray:
    return _read_range(path, choice.index, start, stop, where=where) * scale

  return core.Recording(
    id=rid,
    path=path,
    channel=choice.name,
    lead=choice.lead,
    fs=fs,
    n_samples=int(header.sig_len),
    reader=reader,
    notes=[choice.note] if choice.note else [],
    comments=list(header.comments or []),
  )


def _open_multi(
  path: pathlib.Path, header, fs: float, *, rid: str, lead, channel, unit
) -> core.Recording:
  """A multi-segment record: the channel is chosen on the layout (or first segment) names."""
  where = f"{path}.hea"
  names = list(header.seg_name or [])
  lengths = [int(n) for n in (header.seg_len or [])]
  segments = []  # (first sample, length, record path or None, channel index, scale)
  chosen = None
  offset = 0
  for name, n in zip(names, lengths):
    if name == "~" or n == 0:
      if n == 0 and name != "~" and chosen is None:  # The layout segment of a variable layout.
        layout = _rdheader(path.parent / name)
        chosen = core.choose_channel(layout.sig_name or [], where=where, lead=lead, channel=channel)
      segments.append((offset, n, None, -1, 1.0))
      offset += n
      continue
    seg_path = path.parent / name
    seg = _rdheader(seg_path)
    if core.check_fs(seg.fs, where=f"{seg_path}.hea") != fs:
      raise core.InputError(
        f"{seg_path}.hea: segment at {seg.fs:g} Hz in a {fs:g} Hz record.", "unreadable"
      )
    if chosen is None:  # A fixed layout: every segment has the same channels as the first.
      chosen = core.choose_channel(seg.sig_name or [], where=where, lead=lead, channel=channel)
    seg_names = [str(s).strip() for s in (seg.sig_name or [])]
    j = seg_names.index(chosen.name) if chosen.name in seg_names else -1
    scale = 1.0
    if j >= 0:
      scale = _units(seg, j, where=f"{seg_path}.hea", unit=unit)
      _check_files(seg, seg_path.parent, j, where=f"{seg_path}.hea")
    segments.append((offset, n, seg_path if j >= 0 else None, j, scale))
    offset += n
  if chosen is None or offset == 0:
    raise core.InputError(f"{where}: a multi-segment record without samples.", "short")
  total = int(header.sig_len) if header.sig_len else offset

  def reader(start: int, stop: int) -> np.ndarray:
    out = np.full(stop - start, np.nan)
    for first, n, seg_path, j, scale in segments:
      a, b = max(start, first), min(stop, first + n)
      if seg_path is None or b <= a:
        continue
      out[a - start : b - start] = (
        _read_range(seg_path, j, a - first, b - first, where=f"{seg_path}.hea") * scale
      )
    return out

  return core.Recording(
    id=rid,
    path=path,
    channel=chosen.name,
    lead=chosen.lead,
    fs=fs,
    n_samples=min(total, offset),
    reader=reader,
    notes=[chosen.note] if chosen.note else [],
    comments=list(header.comments or []),
  )


def segment_names(hea: pathlib.Path) -> list[str]:
  """Segment record names a multi-segment header lists ([] for a single-segment header).

  Read from the text (no wfdb call) so that discovering a directory skips the segments of
  multi-segment records without parsing every header twice.
  """
  try:
    lines = [
      ln.split("#", 1)[0].strip()
      for ln in hea.read_text(encoding="utf-8", errors="replace").splitlines()
    ]
  except OSError:
    return []
  lines = [ln for ln in lines if ln]
  if not lines or "/" not in lines[0].split()[0]:
    return []
  try:
    n_seg = int(lines[0].split()[0].split("/", 1)[1])
  except ValueError:
    return []
  return [ln.split()[0] for ln in lines[1 : 1 + n_seg] if ln.split()[0] != "~"]
