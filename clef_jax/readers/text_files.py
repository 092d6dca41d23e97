"""Apple Watch / Apple Health ECG CSV exports, plain CSV and `.npy` arrays as `Recording`s.

Apple Health's export (`electrocardiograms/ecg_<date>.csv`) is a header block of `key,value`
lines, then one sample per line:

    Name,<name>
    Date of Birth,...
    Recorded Date,2024-05-01 08:12:40 +0200
    Classification,Sinus Rhythm
    ...
    Sample Rate,512 hertz
    <blank>
    Lead,Lead I
    Unit,µV
    <blank>
    -118.251
    ...

The sampling rate, lead and unit come from that block. A plain CSV (no such block) holds one
column per channel with an optional header row of channel names; an `.npy` array holds `(T,)`,
`(N, T)` (N single-lead recordings) or `(N, T, 12)` (leads in `schema.LEAD_ORDER`). Neither says its
sampling rate or unit, so both are required (`--fs`, `--unit`): a guessed rate would give
embeddings of a signal played at the wrong speed without any sign of it.
CSV files are read whole (wearable exports are short); `.npy` files are memory-mapped.
"""

from __future__ import annotations

import csv
import io
import pathlib
import re

import numpy as np

from clef_jax.data import schema
from clef_jax.readers import core

DEFAULT_UNIT = "mV"  # Of in-memory arrays (`from_array`), as the Python API documents.
_NUMBER = re.compile(r"^\s*[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?\s*$")


def _required(
  path: pathlib.Path, fs: float | None, unit: str | None, *, what: str
) -> tuple[float, str]:
  """`--fs` and `--unit` for a file that says neither; InputError naming what is missing."""
  missing = [flag for flag, v in (("--fs HZ", fs), ("--unit (uV, mV or V)", unit)) if v is None]
  if missing:
    raise core.InputError(
      f"{path}: {what} does not say its sampling rate or unit; pass {' and '.join(missing)}.",
      "bad_argument",
    )
  return fs, unit  # type: ignore[return-value]


def _array_recording(
  x: np.ndarray,
  *,
  rid: str,
  path: pathlib.Path,
  channel: str,
  lead: str | None,
  fs: float,
  scale: float,
  notes: list[str],
) -> core.Recording:
  def reader(start: int, stop: int) -> np.ndarray:
    return np.asarray(x[start:stop], np.float64) * scale

  return core.Recording(
    id=rid,
    path=path,
    channel=channel,
    lead=lead,
    fs=fs,
    n_samples=int(x.shape[0]),
    reader=reader,
    notes=notes,
  )


def from_array(
  x: np.ndarray,
  *,
  fs: float,
  unit: str = DEFAULT_UNIT,
  rid: str = "0",
  lead: str | None = None,
  path: str = "signal",
) -> core.Recording:
  """An in-memory single-lead signal `(T,)` as a `Recording` (the Python API's input)."""
  x = np.asarray(x)
  if x.ndim != 1 or x.dtype.kind not in "fiu":
    raise core.InputError(
      f"{path}: expected a 1-D real-valued signal (T,); got {x.dtype} {x.shape}.", "bad_shape"
    )
  where = path
  fs = core.check_fs(fs, where=where, fix="pass the rate in Hz as fs=")
  return _array_recording(
    x,
    rid=rid,
    path=pathlib.Path(path),
    channel=lead or "signal",
    lead=lead,
    fs=fs,
    scale=core.unit_scale(unit, where=where),
    notes=[],
  )


# ------------------------------------------------------------------------------------------------
# CSV.
# ------------------------------------------------------------------------------------------------
def _read_text(path: pathlib.Path) -> str:
  try:
    data = path.read_bytes()
  except OSError as e:
    raise core.InputError(f"{path}: cannot read ({e.strerror}).", "unreadable") from None
  # Apple writes UTF-8 (with "µV"); anything else is decoded leniently (only numbers matter).
  return data.decode("utf-8-sig", errors="replace")


def _parse_rate(text: str, *, where: str) -> float:
  m = re.match(r"\s*([-+]?[\d.,]+(?:[eE][-+]?\d+)?)\s*(hertz|hz)?\s*$", text, re.IGNORECASE)
  if not m:
    raise core.InputError(
      f"{where}: unreadable sample rate {text!r}; pass --fs.", "bad_sampling_rate"
    )
  try:
    return float(m.group(1).replace(",", "."))
  except ValueError:
    raise core.InputError(
      f"{where}: unreadable sample rate {text!r}; pass --fs.", "bad_sampling_rate"
    ) from None


def open_csv(
  path: pathlib.Path,
  *,
  rid: str,
  lead: str | None = None,
  channel: str | int | None = None,
  fs: float | None = None,
  unit: str | None = None,
) -> core.Recording:
  """An Apple Health ECG export or a plain CSV, on one channel."""
  where = str(path)
  rows = list(csv.reader(io.StringIO(_read_text(path))))
  body = next(
    (
      i
      for i, r in enumerate(rows)
      if r and all(_NUMBER.match(c) for c in r if c) and any(c.strip() for c in r)
    ),
    None,
  )
  if body is None:
    raise core.InputError(f"{where}: no numeric samples found.", "short")
  head = {r[0].strip().lower(): ",".join(r[1:]).strip() for r in rows[:body] if r and r[0]}
  if "sample rate" in head:  # An Apple Health export.
    return _open_apple(
      path, rows[body:], head, rid=rid, lead=lead, channel=channel, fs=fs, unit=unit
    )
  names = [c.strip() for c in rows[body - 1]] if body else []
  data = rows[body:]
  width = max(len(r) for r in data)
  if len(names) != width:
    names = [str(i) for i in range(width)]
  choice = core.choose_channel(names, where=where, lead=lead, channel=channel)
  fs, unit = _required(path, fs, unit, what="a plain CSV")
  fs = core.check_fs(fs, where=where, fix="pass --fs HZ")
  x = np.array([_cell(r, choice.index) for r in data if any(c.strip() for c in r)], np.float64)
  return _array_recording(
    x,
    rid=rid,
    path=path,
    channel=choice.name,
    lead=choice.lead,
    fs=fs,
    scale=core.unit_scale(unit, where=where),
    notes=[choice.note] if choice.note else [],
  )


def _cell(row: list[str], j: int) -> float:
  try:
    return float(row[j])
  except (IndexError, ValueError):
    return np.nan  # A blank or missing cell is a missing sample.


def _open_apple(
  path: pathlib.Path,
  data: list[list[str]],
  head: dict[str, str],
  *,
  rid: str,
  lead,
  channel,
  fs,
  unit,
) -> core.Recording:
  where = str(path)
  if fs is None:  # --fs replaces the file's rate, readable or not.
    fs = _parse_rate(head["sample rate"], where=where)
  fs = core.check_fs(fs, where=where, fix="fix the file's Sample Rate line or pass --fs")
  name = head.get("lead", "Lead I") or "Lead I"  # Apple Watch records lead I.
  choice = core.choose_channel([name], where=where, lead=lead, channel=channel)
  file_unit = head.get("unit")
  scale = core.unit_scale(unit if unit is not None else file_unit, where=where)
  x = np.array([_cell(r, 0) for r in data if r and r[0].strip()], np.float64)
  return _array_recording(
    x,
    rid=rid,
    path=path,
    channel=choice.name,
    lead=choice.lead,
    fs=fs,
    scale=scale,
    notes=[choice.note] if choice.note else [],
  )


# ------------------------------------------------------------------------------------------------
# .npy
# ------------------------------------------------------------------------------------------------
def open_npy(
  path: pathlib.Path,
  *,
  lead: str | None = None,
  channel: str | int | None = None,
  fs: float | None = None,
  unit: str | None = None,
) -> list[core.Recording]:
  """The recordings in an `.npy` array (one per row); memory-mapped, never unpickled."""
  where = str(path)
  try:
    a = np.load(path, mmap_mode="r", allow_pickle=False)
  except ValueError as e:
    msg = str(e).split("\n", 1)[0]
    if "object" not in msg.lower():  # A damaged header, not an object array.
      raise core.InputError(f"{where}: not a readable .npy file ({msg}).", "unreadable") from None
    # Object arrays are refused rather than unpickled (unpickling can run code).
    raise core.InputError(
      f"{where}: not a plain numeric array ({msg}); object arrays are never "
      "unpickled, save a float array.",
      "bad_dtype",
    ) from None
  except Exception as e:
    raise core.InputError(
      f"{where}: not a readable .npy file ({type(e).__name__}: {e}).", "unreadable"
    ) from None
  if not isinstance(a, np.ndarray) or a.dtype.kind not in "fiu" or a.dtype.fields:
    raise core.InputError(
      f"{where}: dtype {getattr(a, 'dtype', type(a))} is not a real number "
      "type; save the signal as float32/float64 (or integers).",
      "bad_dtype",
    )
  if a.ndim == 1:
    a = a[None]
  if a.ndim == 3:
    if a.shape[-1] != schema.NUM_LEADS:
      raise core.InputError(f"{where}: 3-D input must be (N, T, 12); got {a.shape}.", "bad_shape")
    choice = core.choose_channel(list(schema.LEAD_ORDER), where=where, lead=lead, channel=channel)
    a, name, std = a[..., choice.index], choice.name, choice.lead
  elif a.ndim == 2:
    if channel is not None:
      raise core.InputError(
        f"{where}: (N, T) arrays have one channel; drop --channel.", "bad_argument"
      )
    name, std = lead or "signal", lead
  else:
    raise core.InputError(
      f"{where}: expected (T,), (N, T) or (N, T, 12); got {a.shape}.", "bad_shape"
    )
  fs, unit = _required(path, fs, unit, what="a .npy array")
  fs = core.check_fs(fs, where=where, fix="pass --fs HZ")
  scale = core.unit_scale(unit, where=where)
  return [
    _array_recording(
      a[i], rid=str(i), path=path, channel=name, lead=std, fs=fs, scale=scale, notes=[]
    )
    for i in range(a.shape[0])
  ]
