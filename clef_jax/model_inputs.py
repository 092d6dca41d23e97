"""What a backbone is fed: one lead in physical units -> a `(window,)` model input.

`input_contract` is the one chain every embedding path uses (the embed CLI, `clef_jax.Encoder`,
the evaluation records): resample to 500 Hz, interpolate NaN, bandpass 0.67-40 Hz, z-score,
zero-pad (docs/method.md §D, §I). `record_input` and `source_inputs` apply it to decoded TFDS
examples, `read_inputs` to the first window of every recording under a path.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from clef_jax import preprocess as pp
from clef_jax.data import schema

# Filter padding of `scipy.signal.filtfilt` (3 * 11 taps): shorter signals are not filtered.
_MIN_FILTER_SAMPLES = 34


def input_contract(
  x: np.ndarray,
  fs: float,
  *,
  window: int = schema.WINDOW_SAMPLES,
  bandpass: bool = True,
  zscore: bool = True,
) -> np.ndarray:
  """One lead in physical units -> the backbone's input: `(window,)` float32 at 500 Hz.

  The same chain as pretraining's deterministic part (docs/method.md §D, §I), without augmentation:
  resample to 500 Hz, interpolate NaN, bandpass 0.67-40 Hz, keep the first `window` samples,
  z-score over the real samples, zero-pad a shorter record at the end.

  Args:
    x: `(T,)` signal in mV, NaN = missing.
    fs: sampling rate of `x` in Hz.
    window: samples per model input at 500 Hz (5000 = 10 s, the released models' contract).
    bandpass: apply the 0.67-40 Hz filter (pretraining does; turn off only for ablations and
      downstream tasks whose protocol does not filter).
    zscore: z-score the window (pretraining does; off = the signal in mV, for downstream tasks
      whose protocol feeds the raw signal).

  Returns:
    `(window,)` float32 with no NaN.
  """
  x = np.asarray(x, np.float64)
  if x.ndim != 1:
    raise ValueError(f"input_contract takes one lead (T,); got shape {x.shape}.")
  # Only the samples that end up in the window are processed (a 1-hour Holter stays cheap).
  native = int(np.ceil(window * fs / pp.OFFICIAL_FS)) + 1
  x = pp.resample(x[:native], fs, pp.OFFICIAL_FS)[:window]
  x = pp.interpolate_nan(x[None])[0]
  if bandpass and x.shape[0] >= _MIN_FILTER_SAMPLES:
    x = pp.bandpass(x, pp.OFFICIAL_FS)
  out = np.zeros(window, np.float32)
  if x.shape[0]:
    out[: x.shape[0]] = pp.zscore(x) if zscore else x
  return out


def record_input(
  record: dict[str, Any], *, lead: str | int, window: int = schema.WINDOW_SAMPLES
) -> np.ndarray:
  """A decoded TFDS example (`schema.record_features` schema) -> `(window,)` model input."""
  j = lead if isinstance(lead, int) else schema.lead_index(lead)
  x = schema.to_physical(
    record["signal"][:, j : j + 1], record["gain"][j : j + 1], record["baseline"][j : j + 1]
  )[:, 0]
  return input_contract(x, float(record["sampling_rate"]), window=window)


def source_inputs(
  source: Sequence[dict[str, Any]],
  *,
  lead: str | int,
  window: int = schema.WINDOW_SAMPLES,
  label_keys: Iterable[str] = (),
  limit: int | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
  """Model inputs and labels of (the first `limit`) records of a random-access source.

  Returns:
    `(x, labels)`: `x` `(N, window)` float32, `labels[key]` `(N,)`.
  """
  n = len(source) if limit is None else min(limit, len(source))
  xs, labels = [], {k: [] for k in label_keys}
  for i in range(n):
    record = source[i]
    xs.append(record_input(record, lead=lead, window=window))
    for k in labels:
      labels[k].append(record[k])
  return np.stack(xs), {k: np.asarray(v) for k, v in labels.items()}


def read_inputs(
  path: str | os.PathLike,
  *,
  lead: str | None = None,
  window: int = schema.WINDOW_SAMPLES,
  fs: float | None = None,
  channel: str | int | None = None,
  unit: str | None = None,
) -> tuple[np.ndarray, list[str], list[str]]:
  """The first window of every recording under PATH as model inputs (see `clef_jax.readers`).

  Args:
    path: a file, a WFDB record (`rec` or `rec.hea`) or a directory.
    lead, channel: which channel (`readers.choose_channel`).
    window: samples per model input at 500 Hz.
    fs, unit: for files that do not say (CSV, `.npy`: required there).

  Returns:
    `(x (N, window) float32, ids, errors)`; `errors` holds one line per skipped record.
  """
  from clef_jax import readers  # Lazy: keeps this module import-light.

  xs, ids, errors = [], [], []
  for item in readers.open_inputs(path, lead=lead, channel=channel, fs=fs, unit=unit):
    if isinstance(item, readers.Skipped):
      errors.append(f"{item.id}: {item.message}")
      continue
    try:
      native = int(np.ceil(window * item.fs / pp.OFFICIAL_FS)) + 1
      x = item.read(0, native).astype(np.float32)  # As `readers.iter_windows` gives.
      xs.append(input_contract(x, item.fs, window=window))
      ids.append(item.id)
    except readers.InputError as e:
      errors.append(f"{item.id}: {e}")
    finally:
      item.close()
  x = np.stack(xs) if xs else np.zeros((0, window), np.float32)
  return x, ids, errors
