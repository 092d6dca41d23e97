"""`Encoder`: a pretrained backbone that embeds ECG arrays and files, one row per window.

    enc = clef_jax.Encoder.load("workdir")                   # or a PyTorch .ckpt with size=...
    z = enc.embed(signal, fs=512, unit="uV")                 # (n_windows, D)
    result = enc.embed_file("holter.edf", lead="II")         # .vectors, .index, .skipped

Every signal goes through `clef_jax.readers` (files) or `readers.from_array` (arrays), is cut
into windows (`readers.Windowing`) and each window through `model_inputs.input_contract`
(resample to 500 Hz, interpolate NaN, bandpass, z-score) before the backbone. `python -m clef_jax.embed` is a
thin CLI over `Encoder.embed_inputs`, so the API and the CLI give the same numbers.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any, TextIO

import numpy as np

from clef_jax import embed as embed_lib
from clef_jax import model_inputs, readers

AGGREGATES = ("none", "mean")


@dataclasses.dataclass
class Embedded:
  """Embeddings of one or more recordings.

  Attributes:
    vectors: `(rows, D)` float32: one row per kept window, or per record with `aggregate="mean"`.
    index: one `readers.Span` per row (with `aggregate="mean"`, from the first window's start to
      the last one's end).
    windows: kept windows per row (1 unless aggregated).
    skipped_windows: skipped windows per reason (`readers.SKIP_REASONS`).
    skipped_records: `readers.Skipped` for every record without a single kept window.
  """

  vectors: np.ndarray
  index: list[readers.Span]
  windows: list[int]
  skipped_windows: collections.Counter
  skipped_records: list[readers.Skipped]

  def index_rows(self) -> list[dict[str, Any]]:
    """The index CSV's rows: record, channel, start_s, end_s, fs_native (, windows)."""
    rows = []
    for s, n in zip(self.index, self.windows):
      row = {
        "record": s.record,
        "channel": s.channel,
        "start_s": round(s.start_s, 6),
        "end_s": round(s.end_s, 6),
        "fs_native": s.fs_native,
      }
      rows.append(row | {"windows": n})
    return rows


class Progress:
  """One status line on a stream (overwritten in place on a terminal), at most every `every_s`."""

  def __init__(self, total_records: int, stream: TextIO | None = None, every_s: float = 5.0):
    self.total_records = total_records
    self.stream = stream
    self.every_s = every_s
    self.t0 = time.monotonic()
    self.last = self.t0
    self.records = self.windows = 0
    self.expected = 0  # Windows of the records opened so far.
    self.opened = 0

  def opened_record(self, n_windows: int) -> None:
    self.opened += 1
    self.expected += n_windows

  def line(self) -> str:
    dt = max(time.monotonic() - self.t0, 1e-9)
    rate = self.windows / dt
    # Unopened records are assumed to be as long as the opened ones on average.
    per_record = self.expected / max(self.opened, 1)
    total = self.expected + per_record * (self.total_records - self.opened)
    eta = (total - self.windows) / rate if rate > 0 else float("nan")
    eta_text = time.strftime("%H:%M:%S", time.gmtime(eta)) if np.isfinite(eta) else "?"
    return (
      f"embed: {self.records}/{self.total_records} records, {self.windows} windows, "
      f"{rate:.1f} windows/s, ETA {eta_text}"
    )

  def update(self, *, records: int, windows: int, force: bool = False) -> None:
    self.records, self.windows = records, windows
    now = time.monotonic()
    if self.stream is None or (not force and now - self.last < self.every_s):
      return
    self.last = now
    end = "\r" if getattr(self.stream, "isatty", lambda: False)() and not force else "\n"
    print(self.line(), file=self.stream, end=end, flush=True)


class Encoder:
  """A backbone with its parameters, embedding ECGs through the models' input contract."""

  def __init__(
    self,
    model: Any,
    params: Any,
    *,
    backbone: str = "net1d",
    size: str = "",
    source: str = "",
    batch_size: int = 64,
  ):
    if batch_size < 1:
      raise ValueError(f"batch_size must be >= 1; got {batch_size}.")
    self.model, self.params = model, params
    self.backbone, self.size, self.source = backbone, size, source
    self.batch_size = batch_size
    self._embed_fn: Callable[[Any, np.ndarray], Any] | None = None

  @classmethod
  def load(
    cls,
    source: str | os.PathLike,
    *,
    backbone: str | None = None,
    size: str | None = None,
    batch_size: int = 64,
  ) -> Encoder:
    """Loads a training workdir (its latest checkpoint), a step directory or a PyTorch file.

    Args:
      source: workdir / step directory, or a `.ckpt`/`.pth`/`.pt`/`.safetensors` file.
      backbone: "net1d" (default) or "msformer", for PyTorch files.
      size: "small" | "medium" | "large", for PyTorch files.
      batch_size: windows per backbone call.
    """
    from clef_jax import weights  # Lazy: Orbax and the models load only when weights do.

    path = os.fspath(source)
    if os.path.isdir(path):  # The checkpoint's saved config names its backbone and size.
      loaded = weights.load_backbone(path)
    else:
      if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such weights file or workdir.")
      if not size:
        raise ValueError(
          f"{path}: a PyTorch weights file needs its size (--size small | medium | large)."
        )
      loaded = weights.load_backbone(path, backbone=backbone or "net1d", size=size)
    return cls(
      loaded.model,
      loaded.params,
      backbone=loaded.backbone,
      size=loaded.size,
      source=path,
      batch_size=batch_size,
    )

  def embed_windows(self, x: np.ndarray) -> np.ndarray:
    """Model inputs `(N, L)` (already through the input contract) -> `(N, D)` float32."""
    if self._embed_fn is None:
      self._embed_fn = embed_lib.make_embed_fn(self.model)
    return embed_lib.embed_array(
      self._embed_fn, self.params, np.asarray(x, np.float32), batch_size=self.batch_size
    )

  def embed(
    self,
    signal: np.ndarray,
    *,
    fs: float,
    lead: str | None = None,
    unit: str = "mV",
    aggregate: str = "none",
    **windowing,
  ) -> np.ndarray:
    """One single-lead signal -> `(n_windows, D)` float32 (or `(1, D)` with aggregate="mean").

    Args:
      signal: `(T,)` samples, NaN = missing.
      fs: its sampling rate in Hz.
      lead: the standard lead it is (informational: the models are single-lead).
      unit: "mV" (default), "uV" or "V".
      aggregate: "none" (a row per window) or "mean" (one row).
      **windowing: `readers.Windowing` fields (window_s, hop_s, min_s, max_missing, max_windows).

    Raises:
      readers.InputError: bad rate, unit or shape, or no window worth embedding.
    """
    rec = readers.from_array(signal, fs=fs, unit=unit, lead=readers.check_lead(lead))
    out = self.embed_inputs([rec], readers.Windowing(**windowing), aggregate=aggregate)
    if not out.index:
      raise readers.InputError(out.skipped_records[0].message, out.skipped_records[0].reason)
    return out.vectors

  def embed_file(
    self,
    path: str | os.PathLike,
    *,
    lead: str | None = None,
    channel: str | int | None = None,
    fs: float | None = None,
    unit: str | None = None,
    aggregate: str = "none",
    log: Callable[[str], None] | None = None,
    **windowing,
  ) -> Embedded:
    """A file, WFDB record or directory (see `clef_jax.readers`) -> `Embedded`.

    Args:
      path: a file, a WFDB record (`rec` or `rec.hea`) or a directory searched recursively.
      lead, channel: which channel (`readers.choose_channel`).
      fs, unit: for files that do not say (plain CSV, `.npy`: required there).
      aggregate: "none" (a row per window) or "mean" (a row per record).
      log: receives one line per alias applied and per record or window skipped.
      **windowing: `readers.Windowing` fields.

    Returns:
      `Embedded`; records that could not be used are in `.skipped_records`.

    Raises:
      readers.InputError: `path` holds no readable recording or not a single window worth
        embedding (the message is the one record's reason, or the counts per reason).
    """
    w = readers.Windowing(**windowing)
    items = readers.open_inputs(path, lead=lead, channel=channel, fs=fs, unit=unit)
    out = self.embed_inputs(items, w, aggregate=aggregate, log=log)
    if not out.index:
      if len(out.skipped_records) == 1:
        raise readers.InputError(out.skipped_records[0].message, out.skipped_records[0].reason)
      counts = collections.Counter(s.reason for s in out.skipped_records)
      raise readers.InputError(
        f"{path}: no window to embed (skipped records: "
        + ", ".join(f"{n} {r}" for r, n in sorted(counts.items()))
        + ").",
        "empty",
      )
    return out

  def embed_inputs(
    self,
    items: Iterable[readers.Recording | readers.Skipped],
    windowing: readers.Windowing,
    *,
    aggregate: str = "none",
    log: Callable[[str], None] | None = None,
    progress: Progress | None = None,
  ) -> Embedded:
    """Streams recordings through windowing, the input contract and the backbone.

    Windows of consecutive recordings share backbone batches; at most `batch_size` windows and
    one read chunk per recording are in memory besides the output rows.
    """
    if aggregate not in AGGREGATES:
      raise readers.InputError(
        f"--aggregate {aggregate!r}: choose one of {AGGREGATES}.", "bad_argument"
      )
    log = log or (lambda line: None)
    window = windowing.model_samples
    spans: list[readers.Span] = []
    vectors: list[np.ndarray] = []
    batch: list[np.ndarray] = []
    skipped_windows: collections.Counter = collections.Counter()
    skipped: list[readers.Skipped] = []
    failed: set[str] = set()
    n_records = n_windows = 0

    def flush():
      if batch:
        vectors.append(self.embed_windows(np.stack(batch)))
        batch.clear()

    for item in items:
      if isinstance(item, readers.Skipped):
        skipped.append(item)
        log(f"skipped {item.id}: {item.message}")
        continue
      rec = item
      for note in rec.notes:
        log(note)
      if progress is not None:
        progress.opened_record(readers.count_windows(rec, windowing))
      kept, reasons = 0, collections.Counter()
      try:
        for span, x, reason in readers.iter_windows(rec, windowing):
          if reason is not None:
            reasons[reason] += 1
            continue
          batch.append(model_inputs.input_contract(x, rec.fs, window=window))
          spans.append(span)
          kept += 1
          n_windows += 1
          if len(batch) == self.batch_size:
            flush()
          if progress is not None:
            progress.update(records=n_records, windows=n_windows)
      except readers.InputError as e:  # A read failing mid-record drops the whole record.
        failed.add(rec.id)
        n_windows -= kept
        skipped.append(readers.Skipped(rec.id, e.reason, str(e)))
        log(f"skipped {rec.id}: {e}")
        continue
      finally:
        rec.close()
      skipped_windows.update(reasons)
      n_records += 1
      if not kept:
        what = ", ".join(f"{n} {r}" for r, n in reasons.items())
        reason = reasons.most_common(1)[0][0] if reasons else "short"
        msg = (
          f"{rec.path}: no window to embed ({what}; {rec.duration_s:.1f} s at "
          f"{rec.fs:g} Hz; windows need {windowing.min_seconds:g} s with at most "
          f"{windowing.max_missing:.0%} missing and a non-flat signal)."
        )
        skipped.append(readers.Skipped(rec.id, reason, msg))
        log(f"skipped {rec.id}: {msg}")
      elif reasons:
        log(
          f"{rec.id}: {kept} windows, skipped "
          + ", ".join(f"{n} {r}" for r, n in sorted(reasons.items()))
        )
    flush()
    if progress is not None:
      progress.update(records=n_records, windows=n_windows, force=True)
    z = np.concatenate(vectors) if vectors else np.zeros((0, 0), np.float32)
    if failed:
      keep = np.array([s.record not in failed for s in spans], bool)
      z, spans = z[keep], [s for s, k in zip(spans, keep) if k]
    counts = [1] * len(spans)
    if aggregate == "mean" and spans:
      z, spans, counts = _mean_per_record(z, spans)
    return Embedded(z, spans, counts, skipped_windows, skipped)


def _mean_per_record(
  z: np.ndarray, spans: list[readers.Span]
) -> tuple[np.ndarray, list[readers.Span], list[int]]:
  groups: dict[str, list[int]] = {}
  for i, s in enumerate(spans):
    groups.setdefault(s.record, []).append(i)
  rows, out, counts = [], [], []
  for rows_of in groups.values():
    first, last = spans[rows_of[0]], spans[rows_of[-1]]
    rows.append(z[rows_of].mean(axis=0))
    out.append(dataclasses.replace(first, end_s=last.end_s))
    counts.append(len(rows_of))
  return np.stack(rows).astype(np.float32), out, counts


def stderr_log(line: str) -> None:
  print(line, file=sys.stderr, flush=True)
