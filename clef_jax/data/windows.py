"""Stored windows of a record, and the loading helpers the builders share.

`cut_windows` turns a read record (`wfdb_io.Ecg`) into non-overlapping windows with their usable
leads masked; `load_first_readable` reads + cuts one record (or the first readable of a patient's),
never raising; `imap_ordered` runs it in spawned worker processes.
"""

from __future__ import annotations

import dataclasses
import functools
import multiprocessing
import os
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from clef_jax import build_report as br
from clef_jax.data.schema import (
  INT16_NAN,
  LEAD_ORDER,
  NUM_LEADS,
  SAMPLING_RATE,
  WINDOW_SECONDS,
)
from clef_jax.data.wfdb_io import FLAT_STD_MV, Ecg, Window, add_flag, read_wfdb


def usable_leads(signal: np.ndarray, gain: np.ndarray, baseline: np.ndarray,
                 present: np.ndarray) -> tuple[np.ndarray, dict[str, str]]:
  """The `lead_mask` of a window: present, not all NaN, not flat (std < `FLAT_STD_MV`).

  Returns:
    `(lead_mask (12,) bool, flags)` with `all_nan_lead` / `flat_lead` naming the leads.
  """
  # float64: a float32 std of 5000 equal values is ~1e-5, not 0.
  x = (signal.astype(np.float64) - baseline) / gain  # (W, 12) mV
  missing = signal == INT16_NAN
  empty = missing.all(axis=0)
  all_nan = empty & present
  x[missing] = np.nan
  x[:, empty] = 0.0  # Keeps nanstd quiet; these leads are masked anyway.
  std = np.where(empty, np.inf, np.nanstd(x, axis=0))
  flat = (std < FLAT_STD_MV) & present & ~all_nan
  flags = {}
  for flag, which in ((br.ALL_NAN_LEAD, all_nan), (br.FLAT_LEAD, flat)):
    if which.any():
      flags[flag] = ",".join(LEAD_ORDER[i] for i in np.flatnonzero(which))
  return present & ~all_nan & ~flat, flags


def cut_windows(ecg: Ecg, *, windows: str = "first", short_records: str = "skip",
                window_seconds: float = WINDOW_SECONDS) -> list[Window]:
  """Cuts a record into non-overlapping windows of `window_seconds` and masks unusable leads.

  Args:
    ecg: the record (its `flags` are extended with window-level flags).
    windows: "first" (one window from sample 0) or "all" (every complete window).
    short_records: "skip" raises `too_short` for records shorter than one window; "pad" appends
      0 mV (the digital baseline) up to one window and flags `zero_padded`.
    window_seconds: window length.

  Returns:
    Windows in time order; `Window.index` is the position in the record (0, 1, ...). Windows in
    which no lead is usable are dropped (flag `window_all_leads_missing`).

  Raises:
    build_report.RecordError: `too_short`, or `all_leads_missing` when no window is left.
  """
  if windows not in ("first", "all") or short_records not in ("skip", "pad"):
    raise ValueError(f"windows={windows!r}, short_records={short_records!r}")
  size = int(round(window_seconds * ecg.sampling_rate))
  signal = ecg.signal
  n = signal.shape[0]
  if n < size:
    if short_records == "skip":
      raise br.RecordError(br.TOO_SHORT, f"{n / ecg.sampling_rate:.2f} s < {window_seconds:g} s")
    pad = np.broadcast_to(np.round(ecg.baseline).astype(np.int16), (size - n, NUM_LEADS))
    pad = np.where(ecg.lead_present, pad, INT16_NAN).astype(np.int16)
    signal = np.concatenate([signal, pad])
    add_flag(ecg.flags, br.ZERO_PADDED, f"{n} -> {size} samples")
    n = size
  count = 1 if windows == "first" else n // size
  out = []
  for index in range(count):
    seg = signal[index * size:(index + 1) * size]
    mask, flags = usable_leads(seg, ecg.gain, ecg.baseline, ecg.lead_present)
    for flag, detail in flags.items():
      add_flag(ecg.flags, flag, f"w{index}:{detail}" if count > 1 else detail)
    if not mask.any():
      add_flag(ecg.flags, br.WINDOW_DROPPED, f"w{index}")
      continue
    out.append(Window(index=index, signal=np.ascontiguousarray(seg), gain=ecg.gain,
                      baseline=ecg.baseline, lead_mask=mask, sampling_rate=ecg.sampling_rate))
  if not out:
    raise br.RecordError(br.ALL_LEADS_MISSING, "no usable lead in any window")
  return out


@dataclasses.dataclass
class Loaded:
  """What `load_first_readable` returns (small enough to send back from a worker process).

  Attributes:
    index: position of the record that was stored, or None if none was readable.
    windows: its windows.
    flags: its flags (record- and window-level).
    comments: its header comments.
    errors: `(position, RecordError)` for every record tried before it (or all, if none).
  """

  index: int | None
  windows: list[Window]
  flags: dict[str, str]
  comments: list[str]
  errors: list[tuple[int, br.RecordError]]


def load_first_readable(paths: Sequence[str | os.PathLike], *,
                        sampling_rate: float = SAMPLING_RATE, windows: str = "first",
                        short_records: str = "skip") -> Loaded:
  """`read_wfdb` + `cut_windows` on `paths` in order until one succeeds; never raises.

  One path is the plain case; several are one patient's records when only the first readable one
  is wanted. Any unexpected exception becomes a `read_error`.
  """
  errors = []
  for i, path in enumerate(paths):
    try:
      rec = read_wfdb(path, sampling_rate=sampling_rate)
      wins = cut_windows(rec, windows=windows, short_records=short_records)
      return Loaded(index=i, windows=wins, flags=rec.flags, comments=rec.comments, errors=errors)
    except br.RecordError as e:
      errors.append((i, e))
    except Exception as e:  # Never let one record stop a build.
      errors.append((i, br.RecordError(br.READ_ERROR, f"{type(e).__name__}: {e}")))
  return Loaded(index=None, windows=[], flags={}, comments=[], errors=errors)


def imap_ordered(fn: Callable[[Any], Any], items: Iterable[Any], *, num_workers: int = 0,
                 chunksize: int = 8) -> Iterator[Any]:
  """`map(fn, items)`, in order, optionally in `num_workers` spawned processes.

  Spawned (not forked) workers: the parent may hold TFDS/absl threads and locks that a fork would
  copy mid-use. `fn` must be picklable (a module-level function or a `functools.partial` of one).
  """
  if num_workers <= 0:
    yield from map(fn, items)
    return
  with multiprocessing.get_context("spawn").Pool(num_workers) as pool:
    yield from pool.imap(fn, items, chunksize)


def record_loader(**kwargs) -> Callable[[Sequence[str | os.PathLike]], Loaded]:
  """A picklable `load_first_readable` with fixed keyword arguments (for `imap_ordered`)."""
  return functools.partial(load_first_readable, **kwargs)
