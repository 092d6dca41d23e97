"""Stored windows of a record, and the loading helpers the builders share.

`cut_windows` turns a read record (`wfdb_io.Ecg`) into non-overlapping windows with their usable
leads masked; `load_first_readable` reads + cuts one record (or the first readable of a patient's),
never raising; `imap_ordered` runs it in spawned worker processes.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import multiprocessing
import os
import pathlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from clef_jax import build_report as br
from clef_jax.data.schema import (
  INT16_NAN,
  LEAD_ORDER,
  NUM_LEADS,
  SAMPLING_RATE,
  WINDOW_SECONDS,
)
from clef_jax.data.wfdb_header import checked_fs, read_header
from clef_jax.data.wfdb_io import FLAT_STD_MV, Ecg, Window, add_flag, read_single_lead, read_wfdb


def usable_leads(
  signal: np.ndarray, gain: np.ndarray, baseline: np.ndarray, present: np.ndarray
) -> tuple[np.ndarray, dict[str, str]]:
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


def cut_windows(
  ecg: Ecg,
  *,
  windows: str = "first",
  short_records: str = "skip",
  window_seconds: float = WINDOW_SECONDS,
) -> list[Window]:
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
    seg = signal[index * size : (index + 1) * size]
    mask, flags = usable_leads(seg, ecg.gain, ecg.baseline, ecg.lead_present)
    for flag, detail in flags.items():
      add_flag(ecg.flags, flag, f"w{index}:{detail}" if count > 1 else detail)
    if not mask.any():
      add_flag(ecg.flags, br.WINDOW_DROPPED, f"w{index}")
      continue
    out.append(
      Window(
        index=index,
        signal=np.ascontiguousarray(seg),
        gain=ecg.gain,
        baseline=ecg.baseline,
        lead_mask=mask,
        sampling_rate=ecg.sampling_rate,
      )
    )
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


def load_first_readable(
  paths: Sequence[str | os.PathLike],
  *,
  sampling_rate: float = SAMPLING_RATE,
  windows: str = "first",
  short_records: str = "skip",
  lead: str | None = None,
) -> Loaded:
  """`read_wfdb` + `cut_windows` on `paths` in order until one succeeds; never raises.

  One path is the plain case; several are one patient's records when only the first readable one
  is wanted. Any unexpected exception becomes a `read_error`. With `lead`, the records are
  single-lead ones read with `read_single_lead` (for `windows="first"` only the first window's
  samples are read).
  """
  errors = []
  for i, path in enumerate(paths):
    try:
      if lead is None:
        rec = read_wfdb(path, sampling_rate=sampling_rate)
      else:
        header = read_header(pathlib.Path(path))
        stop = math.ceil(WINDOW_SECONDS * checked_fs(header)) if windows == "first" else None
        rec = read_single_lead(
          path, lead=lead, sampto=stop, sampling_rate=sampling_rate, header=header
        )
      wins = cut_windows(rec, windows=windows, short_records=short_records)
      return Loaded(index=i, windows=wins, flags=rec.flags, comments=rec.comments, errors=errors)
    except br.RecordError as e:
      errors.append((i, e))
    except Exception as e:  # Never let one record stop a build.
      errors.append((i, br.RecordError(br.READ_ERROR, f"{type(e).__name__}: {e}")))
  return Loaded(index=None, windows=[], flags={}, comments=[], errors=errors)


def imap_ordered(
  fn: Callable[[Any], Any], items: Iterable[Any], *, num_workers: int = 0, chunksize: int = 8
) -> Iterator[Any]:
  """`map(fn, items)`, in order, optionally in `num_workers` spawned processes.

  Spawned (not forked) workers: the parent may hold TFDS/absl threads and locks that a fork would
  copy mid-use. `fn` must be picklable (a module-level function or a `functools.partial` of one).
  """
  if num_workers <= 0:
    yield from map(fn, items)
    return
  with multiprocessing.get_context("spawn").Pool(num_workers) as pool:
    yield from pool.imap(fn, items, chunksize)


def starcall(fn: Callable[..., Any], args_kwargs: tuple[Sequence[Any], dict[str, Any]]) -> Any:
  """`fn(*args, **kwargs)` from one item: per-item keyword arguments through `imap_ordered`."""
  args, kwargs = args_kwargs
  return fn(*args, **kwargs)


def record_loader(**kwargs) -> Callable[[Sequence[str | os.PathLike]], Loaded]:
  """A picklable `load_first_readable` with fixed keyword arguments (for `imap_ordered`)."""
  return functools.partial(load_first_readable, **kwargs)


@dataclasses.dataclass
class AnnotatedWindow:
  """One window chosen around a WFDB annotation (see `annotated_windows`).

  Attributes:
    label: index of the annotation's class in `classes`.
    record: position of its record in `paths`.
    sample: the annotation's sample number in that record.
    start: the window's first sample.
    window: the stored window (`Window.index` is 0).
    flags: flags of the read (e.g. `resampled`).
  """

  label: int
  record: int
  sample: int
  start: int
  window: Window
  flags: dict[str, str]


def annotated_windows(
  paths: Sequence[str | os.PathLike],
  *,
  classes: Sequence[str],
  field: str = "symbol",
  anchor: str = "center",
  window: int,
  lead: str,
  seed: Sequence[int],
  annotator: str = "atr",
) -> tuple[list[AnnotatedWindow], list[tuple[int, br.RecordError]]]:
  """At most one window per annotation class, at a random annotation of that class; never raises.

  The records (one patient's segments) are visited in order; for each class not found yet, the
  first record holding an annotation of it whose window fits inside the record gives the window,
  at one of those annotations drawn uniformly with `numpy.random.default_rng(seed)`. Annotation
  files are read whole (they are small); of the signal only the window's samples are read
  (`read_single_lead`). A window without a usable lead (flat, all NaN) is passed over for the
  next record.

  Args:
    paths: record paths without extension.
    classes: the annotation values to look for, e.g. `("N", "S", "V")` beat symbols or
      `("(N", "(AFIB", "(AFL")` rhythm notes.
    field: "symbol" (beat labels) or "aux_note" (rhythm changes; NUL padding and blanks ignored).
    anchor: "center" (the window is centred on the annotation) or "start" (it starts there).
    window: samples per window, at the record's own rate.
    lead: `LEAD_ORDER` column to store the channel in (see `read_single_lead`).
    seed: the generator seed (e.g. `(build_seed, patient_number)`).
    annotator: annotation file extension.

  Returns:
    `(windows in class order, [(record position, RecordError)] for records that failed)`.
  """
  import wfdb  # Lazy.

  if field not in ("symbol", "aux_note") or anchor not in ("center", "start"):
    raise ValueError(f"field={field!r}, anchor={anchor!r}")
  rng = np.random.default_rng(list(seed))
  found: dict[int, AnnotatedWindow] = {}
  errors = []
  for r, path in enumerate(paths):
    if len(found) == len(classes):
      break
    path = pathlib.Path(path)
    try:
      header = read_header(path)
      try:
        ann = wfdb.rdann(os.fspath(path), annotator)
      except FileNotFoundError as e:
        raise br.RecordError(br.MISSING_SIGNAL_FILE, f"annotations: {e}") from None
      except Exception as e:
        raise br.RecordError(br.READ_ERROR, f"annotations: {type(e).__name__}: {e}") from None
      samples = np.asarray(ann.sample, np.int64)
      values = getattr(ann, field) or [""] * len(samples)  # wfdb gives None when all are empty.
      keys = np.asarray([str(v or "").strip("\x00 \t") for v in values], dtype=object)
      starts = samples - window // 2 if anchor == "center" else samples
      fits = (starts >= 0) & (starts + window <= header.sig_len)
      for label, cls in enumerate(classes):
        if label in found:
          continue
        candidates = np.flatnonzero((keys == cls) & fits)
        if candidates.size == 0:
          continue
        i = int(candidates[rng.integers(candidates.size)])
        start = int(starts[i])
        try:
          rec = read_single_lead(
            path, lead=lead, sampfrom=start, sampto=start + window, header=header
          )
          (win,) = cut_windows(rec, window_seconds=window / rec.native_sampling_rate)
        except br.RecordError as e:
          errors.append((r, e))
          continue
        found[label] = AnnotatedWindow(
          label=label, record=r, sample=int(samples[i]), start=start, window=win, flags=rec.flags
        )
    except br.RecordError as e:
      errors.append((r, e))
    except Exception as e:  # Never let one record stop a build.
      errors.append((r, br.RecordError(br.READ_ERROR, f"{type(e).__name__}: {e}")))
  return [found[k] for k in sorted(found)], errors
