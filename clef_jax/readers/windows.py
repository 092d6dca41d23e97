"""Long recordings as a stream of windows, read in bounded chunks.

Window k covers native samples `[round(k * hop_s * fs), ... + round(window_s * fs))`. A window is
kept when it holds at least `min_s` seconds of signal (the last one may be shorter and is then
zero-padded by the input contract, like a short record), at most `max_missing` of it is missing
(NaN) and it is not flat; otherwise it is skipped and counted under `SKIP_REASONS`.

Samples are read `block_windows` windows at a time, so memory stays bounded by
`max_chunk_samples()` whatever the recording's length.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator

import numpy as np

from clef_jax import preprocess as pp
from clef_jax.data import schema, wfdb_io
from clef_jax.readers import core

# The shortest window and the least signal a window may hold, in seconds: below one heartbeat
# (0.5 s at 120 bpm) a window holds no ECG waveform, and below about one second the input
# contract's 0.67 Hz high-pass sees less than a period of what it removes.
MIN_WINDOW_S = 1.0
MIN_SIGNAL_S = 0.5

SKIP_REASONS = {
  "short": "shorter than --min_s",
  "missing": "more than --max_missing of the samples missing",
  "flat": "flat (constant) signal",
}


@dataclasses.dataclass(frozen=True)
class Windowing:
  """How a recording is cut into model inputs.

  Attributes:
    window_s: seconds per window (10 s is the released models' input).
    hop_s: seconds between window starts; None = `window_s` (no overlap).
    min_s: least seconds of signal a window must hold (at least `MIN_SIGNAL_S`); None =
      `window_s / 2`.
    max_missing: largest fraction of missing (NaN) samples a kept window may have.
    max_windows: at most this many windows per record (None: all).
    block_windows: windows read per chunk (bounds memory for any record length).
  """

  window_s: float = float(schema.WINDOW_SECONDS)
  hop_s: float | None = None
  min_s: float | None = None
  max_missing: float = 0.5
  max_windows: int | None = None
  block_windows: int = 64

  def __post_init__(self):
    def bad(field, value, need):
      raise core.InputError(f"--{field} {value!r}: must be {need}.", "bad_argument")

    if not (
      isinstance(self.window_s, (int, float))
      and math.isfinite(self.window_s)
      and MIN_WINDOW_S <= self.window_s <= 3600
    ):
      bad("window_s", self.window_s, f"a number of seconds in [{MIN_WINDOW_S:g}, 3600]")
    if self.hop_s is not None and not (math.isfinite(self.hop_s) and self.hop_s > 0):
      bad("hop_s", self.hop_s, "a positive number of seconds")
    if self.min_s is not None and not (
      math.isfinite(self.min_s) and MIN_SIGNAL_S <= self.min_s <= self.window_s
    ):
      bad("min_s", self.min_s, f"in [{MIN_SIGNAL_S:g}, window_s] seconds")
    if not (math.isfinite(self.max_missing) and 0 <= self.max_missing < 1):
      bad("max_missing", self.max_missing, "a fraction in [0, 1)")
    if self.max_windows is not None and self.max_windows < 1:
      bad("max_windows", self.max_windows, "at least 1")
    if self.block_windows < 1:
      bad("block_windows", self.block_windows, "at least 1")

  @property
  def hop(self) -> float:
    return self.window_s if self.hop_s is None else self.hop_s

  @property
  def min_seconds(self) -> float:
    return self.window_s / 2 if self.min_s is None else self.min_s

  @property
  def model_samples(self) -> int:
    """Samples per model input at the models' 500 Hz."""
    return int(round(self.window_s * pp.OFFICIAL_FS))


@dataclasses.dataclass(frozen=True)
class Span:
  """Where a window lies in its recording (one row of the index CSV)."""

  record: str
  channel: str
  start_s: float
  end_s: float
  fs_native: float


def _sizes(fs: float, w: Windowing) -> tuple[int, int, int]:
  """`(window, contract read, minimum)` lengths in native samples."""
  win = int(round(w.window_s * fs))
  # `input_contract` resamples this many native samples to fill its window (it slices the same).
  read = int(math.ceil(w.model_samples * fs / pp.OFFICIAL_FS)) + 1
  return win, max(win, read), int(math.ceil(w.min_seconds * fs))


def window_starts(n_samples: int, fs: float, w: Windowing) -> list[int]:
  """Native start samples of the windows that hold at least `min_s` seconds."""
  _, _, need = _sizes(fs, w)
  hop = w.hop * fs
  out, k = [], 0
  while True:
    start = int(round(k * hop))
    if start + need > n_samples or (w.max_windows is not None and k >= w.max_windows):
      return out
    out.append(start)
    k += 1


def count_windows(rec: core.Recording, w: Windowing) -> int:
  return len(window_starts(rec.n_samples, rec.fs, w))


def max_chunk_samples(fs: float, w: Windowing) -> int:
  """The most samples one `Recording.read` call of `iter_windows` asks for."""
  _, span, _ = _sizes(fs, w)
  return int(round((w.block_windows - 1) * w.hop * fs)) + span + 1


def iter_windows(
  rec: core.Recording, w: Windowing
) -> Iterator[tuple[Span, np.ndarray | None, str | None]]:
  """Yields `(span, native float32 samples in mV or None, skip reason or None)` per window.

  The samples are the `input_contract` read span (a little more than the window when the rate
  is not a divisor of 500 Hz); the skip checks look at the window itself.
  """
  win, span, need = _sizes(rec.fs, w)
  starts = window_starts(rec.n_samples, rec.fs, w)
  if not starts:
    yield (Span(rec.id, rec.channel, 0.0, rec.duration_s, rec.fs), None, "short")
    return
  for b in range(0, len(starts), w.block_windows):
    block = starts[b : b + w.block_windows]
    first = block[0]
    chunk = rec.read(first, block[-1] + span)
    for start in block:
      x = chunk[start - first : start - first + span]
      real = x[:win]
      end = start + real.shape[0]
      s = Span(rec.id, rec.channel, start / rec.fs, end / rec.fs, rec.fs)
      missing = np.isnan(real)
      if missing.mean() > w.max_missing or missing.all():
        yield s, None, "missing"
      elif np.nanstd(real) < wfdb_io.FLAT_STD_MV:
        yield s, None, "flat"
      else:
        # float32, as the built datasets' physical values: the input contract's 0.67 Hz
        # transfer-function filter turns float64-vs-float32 input differences into ~1e-3.
        yield s, x.astype(np.float32), None
  # A tail too short to be a window is counted, so that every second is accounted for.
  last_end = starts[-1] + win
  if (w.max_windows is None or len(starts) < w.max_windows) and last_end < rec.n_samples:
    yield (Span(rec.id, rec.channel, last_end / rec.fs, rec.duration_s, rec.fs), None, "short")
