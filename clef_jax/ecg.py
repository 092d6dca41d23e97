"""ECG facts in one place: lead names and order, sampling rate, the on-disk record schema.

Every builder stores 12-lead records in `LEAD_ORDER` (the standard clinical order, which is *not*
MIMIC-IV-ECG's header order: MIMIC has aVF before aVL). Signals are stored losslessly as int16
digital values plus a per-lead gain and baseline, exactly as WFDB does:

    physical_mV = (digital - baseline) / gain,   digital == INT16_NAN  ->  NaN

Leads a record lacks are all `INT16_NAN` with `lead_mask == False`; a lead that is present but
unusable in a stored window (all NaN, or flat) keeps its samples and has `lead_mask == False` too.

The second half of this module reads WFDB records into that schema (`read_wfdb`, `cut_windows`):
leads are matched by name (case-insensitively, never by position), other sampling rates are
resampled to the target rate, and every problem either raises `build_report.RecordError` (the record
is skipped) or is returned as a flag (the record is kept); see `clef_jax.build_report`.
"""

from __future__ import annotations

import dataclasses
import fractions
import functools
import math
import multiprocessing
import os
import pathlib
import re
import types
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from clef_jax import build_report as br

# Canonical 12-lead order used by every built dataset and by the models' 12-channel input.
LEAD_ORDER: tuple[str, ...] = (
    "I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
NUM_LEADS = len(LEAD_ORDER)
LEAD_INDEX: dict[str, int] = {name.upper(): i for i, name in enumerate(LEAD_ORDER)}

# The models' input contract (spec §I): 500 Hz, 10 s windows.
SAMPLING_RATE = 500
WINDOW_SECONDS = 10
WINDOW_SAMPLES = SAMPLING_RATE * WINDOW_SECONDS

# WFDB's "missing sample" value for 16-bit formats; used as the NaN sentinel on disk.
INT16_NAN = -32768

# The 11-vector of per-record metadata (spec §D); NaN marks a missing value.
METADATA_FIELDS: tuple[str, ...] = (
    "sex",             # 0: F -> 0, otherwise 1
    "age",             # 1: years
    "bmi",             # 2: kg/m2
    "sbp",             # 3: systolic BP, mmHg
    "dbp",             # 4: diastolic BP, mmHg
    "height_in",       # 5: inches
    "weight_lb",       # 6: pounds
    "heart_rate",      # 7: bpm
    "heart_rate_var",  # 8
    "rate_meta",       # 9: fraction of metadata attributes available
    "score2_risk",     # 10: SCORE2 / SCORE2-OP 10-year risk
)
NUM_METADATA = len(METADATA_FIELDS)
RATE_META_INDEX = METADATA_FIELDS.index("rate_meta")
RISK_INDEX = METADATA_FIELDS.index("score2_risk")


def lead_index(name: str) -> int:
  """Index of a lead in `LEAD_ORDER`, matching names case-insensitively (`AVR` == `aVR`)."""
  try:
    return LEAD_INDEX[name.strip().upper()]
  except KeyError:
    raise KeyError(f"Unknown lead name {name!r}; expected one of {LEAD_ORDER}.") from None


def to_physical(digital: np.ndarray, gain: np.ndarray, baseline: np.ndarray) -> np.ndarray:
  """int16 digital `(T, 12)` -> float32 mV with NaN where the sentinel is stored."""
  x = (digital.astype(np.float32) - baseline.astype(np.float32)) / gain.astype(np.float32)
  x[digital == INT16_NAN] = np.nan
  return x


def record_features(*, signal_encoding: str = "bytes", **extra):
  """The TFDS feature dict every ECG builder shares, plus dataset-specific `extra` features.

  - `record_id`, `patient_id`: text (splits are patient-level).
  - `signal`: `(T, 12)` int16 digital values in `LEAD_ORDER`, `INT16_NAN` = missing.
  - `gain`, `baseline`: `(12,)` float32, physical = (digital - baseline) / gain (mV).
  - `lead_mask`: `(12,)` bool, False for leads the record lacks or that are all NaN / flat.
  - `sampling_rate`: float32 Hz of the stored signal.
  - `metadata`: `(11,)` float32 vector of `METADATA_FIELDS`, NaN = missing.

  `signal_encoding`: "bytes" (default: raw int16; the ArrayRecord writer already compresses each
  record, so an extra zlib layer only costs time — measured 2 % *larger* on disk, 3x slower to
  build and 2.7x slower to decode) or "zlib".
  """
  import tensorflow_datasets as tfds  # Lazy: heavy import.

  encodings = {"bytes": tfds.features.Encoding.BYTES, "zlib": tfds.features.Encoding.ZLIB}
  if signal_encoding not in encodings:
    raise ValueError(f"signal_encoding must be one of {sorted(encodings)}; got {signal_encoding!r}.")

  features = {
      "record_id": tfds.features.Text(),
      "patient_id": tfds.features.Text(),
      "signal": tfds.features.Tensor(
          shape=(None, NUM_LEADS), dtype=np.int16, encoding=encodings[signal_encoding]),
      "gain": tfds.features.Tensor(shape=(NUM_LEADS,), dtype=np.float32),
      "baseline": tfds.features.Tensor(shape=(NUM_LEADS,), dtype=np.float32),
      "lead_mask": tfds.features.Tensor(shape=(NUM_LEADS,), dtype=np.bool_),
      "sampling_rate": tfds.features.Tensor(shape=(), dtype=np.float32),
      "metadata": tfds.features.Tensor(shape=(NUM_METADATA,), dtype=np.float32),
  }
  features.update(extra)
  return tfds.features.FeaturesDict(features)


# ------------------------------------------------------------------------------------------------
# Reading WFDB records into the schema above.
# ------------------------------------------------------------------------------------------------

# Resampled or re-quantised signals are stored at 1000 digital units per mV (1 uV steps, range
# +-32.767 mV, far beyond any ECG), baseline 0. Records at the target rate whose digital values fit
# int16 are stored bit-exactly with their own gain and baseline instead.
RESAMPLED_GAIN = 1000.0
INT16_MAX = 32767

# A lead whose physical std over a stored window is below this (mV) is "flat": on a 1 uV grid any
# single-step change already has std > 1e-5, so this only catches truly constant leads.
FLAT_STD_MV = 1e-6

# Channels that are not one of the 12 standard leads but are expected in some archives (the PTB
# Diagnostic database's Frank leads); dropped and flagged `extra_lead_dropped`, not "unknown".
EXTRA_LEAD_NAMES = frozenset({"VX", "VY", "VZ", "X", "Y", "Z"})

# WFDB's "invalid sample" digital value per storage format (WFDB signal-file spec).
_WFDB_INVALID = {
    "8": None, "16": -2**15, "61": -2**15, "80": -2**7, "160": -2**15, "212": -2**11,
    "310": -2**9, "311": -2**9, "24": -2**23, "32": -2**31,
    "508": -2**7, "516": -2**15, "524": -2**23,
}
# Bytes per sample per format, to detect truncated files before reading them. The FLAC formats
# (5xx) are compressed and cannot be size-checked.
_WFDB_BYTES_PER_SAMPLE = {
    "8": 1, "16": 2, "61": 2, "80": 1, "160": 2, "212": 1.5, "310": 4 / 3, "311": 4 / 3,
    "24": 3, "32": 4,
}
# Physical unit -> factor turning a gain in digital units per that unit into units per mV
# (e.g. 1 unit/uV = 1000 units/mV).
_UNIT_TO_PER_MV = {"mv": 1.0, "uv": 1e3, "µv": 1e3, "μv": 1e3, "v": 1e-3}


@dataclasses.dataclass
class Ecg:
  """One record in `LEAD_ORDER` as int16 digital values, before windowing.

  Attributes:
    record_name: the WFDB record name (header file stem).
    signal: `(T, 12)` int16, `INT16_NAN` for missing samples and absent leads.
    gain: `(12,)` float32 digital units per mV (1 for absent leads).
    baseline: `(12,)` float32 digital value of 0 mV.
    lead_present: `(12,)` bool, the record has a channel for this lead.
    sampling_rate: Hz of `signal`.
    native_sampling_rate: Hz in the header.
    comments: the header's comment lines (without `#`).
    flags: build-report flag -> detail for problems that did not stop the record.
  """

  record_name: str
  signal: np.ndarray
  gain: np.ndarray
  baseline: np.ndarray
  lead_present: np.ndarray
  sampling_rate: float
  native_sampling_rate: float
  comments: list[str]
  flags: dict[str, str]

  def physical(self) -> np.ndarray:
    """`(T, 12)` float32 mV with NaN for missing samples."""
    return to_physical(self.signal, self.gain, self.baseline)


@dataclasses.dataclass
class Window:
  """One stored example's signal fields (the `record_features` minus ids and metadata)."""

  index: int
  signal: np.ndarray      # (W, 12) int16
  gain: np.ndarray        # (12,) float32
  baseline: np.ndarray    # (12,) float32
  lead_mask: np.ndarray   # (12,) bool
  sampling_rate: float

  def features(self) -> dict[str, np.ndarray]:
    return {
        "signal": self.signal,
        "gain": self.gain,
        "baseline": self.baseline,
        "lead_mask": self.lead_mask,
        "sampling_rate": np.float32(self.sampling_rate),
    }


def _add_flag(flags: dict[str, str], flag: str, detail: str):
  flags[flag] = f"{flags[flag]}; {detail}" if flag in flags else detail


def map_leads(names: Sequence[str]) -> tuple[list[int], list[int], dict[str, str]]:
  """Matches channel names to `LEAD_ORDER` case-insensitively.

  Args:
    names: the record's channel names, in file order.

  Returns:
    `(channels, leads, flags)`: the file channel indices to read, the `LEAD_ORDER` index of each,
    and flags for dropped channels (unknown name, Frank lead, repeated lead) and absent leads.
  """
  channels, leads, flags = [], [], {}
  for ch, name in enumerate(names):
    name = str(name).strip()
    try:
      lead = lead_index(name)
    except KeyError:
      flag = br.EXTRA_LEAD if name.upper() in EXTRA_LEAD_NAMES else br.UNKNOWN_LEAD_NAME
      _add_flag(flags, flag, repr(name))
      continue
    if lead in leads:  # Keep the first channel of a repeated lead.
      _add_flag(flags, br.DUPLICATE_LEAD, repr(name))
      continue
    channels.append(ch)
    leads.append(lead)
  absent = [LEAD_ORDER[i] for i in range(NUM_LEADS) if i not in leads]
  if channels and absent:
    _add_flag(flags, br.MISSING_LEADS, ",".join(absent))
  return channels, leads, flags


def _check_signal_files(header, record_dir: pathlib.Path, channels: list[int]):
  """Raises `RecordError` if a needed signal file is absent or shorter than the header implies."""
  fmt = header.fmt or []
  spf = [s or 1 for s in (header.samps_per_frame or [1] * header.n_sig)]
  offsets = header.byte_offset or [None] * header.n_sig
  for file_name in sorted({header.file_name[ch] for ch in channels}):
    path = record_dir / file_name
    if not path.is_file():
      raise br.RecordError(br.MISSING_SIGNAL_FILE, file_name)
    in_file = [ch for ch in range(header.n_sig) if header.file_name[ch] == file_name]
    bps = _WFDB_BYTES_PER_SAMPLE.get(str(fmt[in_file[0]]))
    if bps is None or header.sig_len is None:
      continue  # Compressed or length-less: leave it to the reader.
    frame = sum(spf[ch] for ch in in_file)
    expected = (offsets[in_file[0]] or 0) + math.ceil(header.sig_len * frame * bps)
    size = path.stat().st_size
    if size < expected:
      raise br.RecordError(br.TRUNCATED_SIGNAL, f"{file_name}: {size} of {expected} bytes")


def _read_format16(header, record_dir: pathlib.Path, channels: list[int]) -> np.ndarray | None:
  """Reads `channels` directly when every file involved is plain WFDB format 16, else None.

  Format 16 (little-endian int16, samples interleaved by channel, optionally after a byte offset
  such as the Challenge's 24-byte MATLAB v4 header) is what MIMIC-IV-ECG, PTB-XL, PTB and the
  Challenge use. Reading it with numpy skips `wfdb.rdrecord`'s second header parse, which costs
  more than the read itself; tests check the result against `wfdb.rdrecord`.
  """
  n = header.n_sig
  spf = header.samps_per_frame or [1] * n
  skew = header.skew or [0] * n
  offsets = header.byte_offset or [0] * n
  if header.sig_len is None or any(
      str(header.fmt[ch]) != "16" or (spf[ch] or 1) != 1 or (skew[ch] or 0) != 0
      for ch in range(n) if header.file_name[ch] in {header.file_name[c] for c in channels}):
    return None
  out = np.empty((header.sig_len, len(channels)), np.int16)
  for file_name in {header.file_name[ch] for ch in channels}:
    in_file = [ch for ch in range(n) if header.file_name[ch] == file_name]
    data = np.fromfile(record_dir / file_name, dtype="<i2", count=header.sig_len * len(in_file),
                       offset=offsets[in_file[0]] or 0).reshape(header.sig_len, len(in_file))
    for j, ch in enumerate(channels):
      if ch in in_file:
        out[:, j] = data[:, in_file.index(ch)]
  return out


# The common single-segment header syntax (WFDB header spec); anything else goes to wfdb.
_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_RECORD_LINE = re.compile(rf"^([^\s/]+)\s+(\d+)\s+({_NUM})(?:/{_NUM})?(?:\({_NUM}\))?"
                          r"(?:\s+(\d+))?(?:\s+\S+)*\s*$")
_SIGNAL_LINE = re.compile(
    rf"^(\S+)\s+(\d+)(?:x(\d+))?(?::(\d+))?(?:\+(\d+))?\s+({_NUM})(?:\((-?\d+)\))?"
    r"(?:/(\S+))?\s+(\d+)\s+(-?\d+)\s+(-?\d+)\s+(-?\d+)\s+(\d+)\s+(\S.*?)\s*$")


def _parse_header_text(text: str) -> types.SimpleNamespace | None:
  """Parses a plain single-segment WFDB header; None when it needs `wfdb.rdheader`.

  `wfdb.rdheader` spends ~6 ms per header in pandas indexing, as long as reading and compressing
  the signal; MIMIC-IV-ECG has 800K headers. Only lines with every field spelled out are taken
  here (no defaults to reproduce), so the result equals wfdb's (tests check this on real headers).
  """
  lines, comments = [], []
  for line in text.splitlines():
    stripped = line.strip()
    if stripped.startswith("#"):
      comments.append(stripped[1:].strip())
    elif stripped:
      lines.append(stripped)
  if not lines or not (m := _RECORD_LINE.match(lines[0])):
    return None
  n_sig, fs = int(m.group(2)), float(m.group(3))
  if m.group(4) is None or n_sig == 0 or len(lines) != n_sig + 1:
    return None
  h = types.SimpleNamespace(
      record_name=m.group(1), n_sig=n_sig, fs=fs, sig_len=int(m.group(4)), comments=comments,
      file_name=[], fmt=[], samps_per_frame=[], skew=[], byte_offset=[], adc_gain=[],
      baseline=[], units=[], sig_name=[])
  for line in lines[1:]:
    m = _SIGNAL_LINE.match(line)
    if not m or float(m.group(6)) == 0:  # Gain 0 means "uncalibrated": wfdb's default applies.
      return None
    h.file_name.append(m.group(1))
    h.fmt.append(m.group(2))
    h.samps_per_frame.append(int(m.group(3) or 1))
    h.skew.append(int(m.group(4)) if m.group(4) else None)
    h.byte_offset.append(int(m.group(5)) if m.group(5) else None)
    h.adc_gain.append(float(m.group(6)))
    # No explicit baseline means the ADC zero (WFDB rule).
    h.baseline.append(int(m.group(7)) if m.group(7) is not None else int(m.group(10)))
    h.units.append(m.group(8) or "mV")
    h.sig_name.append(m.group(14))
  return h


def read_header(path: str | os.PathLike):
  """Reads a record's header; raises `RecordError(malformed_header)` on anything unparsable.

  Plain headers are parsed here (`_parse_header_text`), everything else by `wfdb.rdheader`.

  Args:
    path: the record path without extension.

  Returns:
    An object with `wfdb.Record`'s header attributes (`fs`, `sig_len`, `n_sig`, `file_name`,
    `fmt`, `samps_per_frame`, `skew`, `byte_offset`, `adc_gain`, `baseline`, `units`,
    `sig_name`, `comments`, `record_name`).
  """
  import wfdb  # Lazy: only builders read WFDB.

  path = pathlib.Path(path)
  hea = path.with_name(path.name + ".hea")
  try:
    text = hea.read_text(errors="replace")
  except FileNotFoundError as e:
    raise br.RecordError(br.MISSING_HEADER, str(e)) from None
  except OSError as e:
    raise br.RecordError(br.READ_ERROR, f"{type(e).__name__}: {e}") from None
  header = _parse_header_text(text)
  if header is not None:
    return header
  try:
    header = wfdb.rdheader(os.fspath(path))
  except Exception as e:  # wfdb raises many types (HeaderSyntaxError, IndexError, ValueError...).
    raise br.RecordError(br.MALFORMED_HEADER, f"{type(e).__name__}: {e}") from None
  if isinstance(header, wfdb.MultiRecord) or not header.n_sig:
    raise br.RecordError(br.MALFORMED_HEADER, "multi-segment or signal-less header")
  return header


def resample_ratio(fs: float, target: float) -> tuple[int, int]:
  """`(up, down)` integers with `fs * up / down == target` (for `resample_poly`)."""
  ratio = fractions.Fraction(target).limit_denominator(10_000) / fractions.Fraction(
      fs).limit_denominator(10_000)
  return ratio.numerator, ratio.denominator


def resample(x: np.ndarray, fs: float, target: float) -> np.ndarray:
  """Resamples `(T, C)` float signals from `fs` to `target` Hz, carrying NaN gaps along.

  NaN gaps are linearly bridged before `scipy.signal.resample_poly` (a NaN would smear over the
  whole filter length) and put back afterwards at the output samples whose nearest input sample
  was NaN. `padtype="line"` avoids the dip towards zero that the default constant padding gives
  at the edges of signals with an offset.
  """
  import scipy.signal  # Lazy.

  up, down = resample_ratio(fs, target)
  x = np.asarray(x, np.float64)
  n_out = math.ceil(x.shape[0] * up / down)
  nan = np.isnan(x)
  filled = x.copy()
  t = np.arange(x.shape[0])
  for c in range(x.shape[1]):
    if nan[:, c].all():
      filled[:, c] = 0.0
    elif nan[:, c].any():
      ok = ~nan[:, c]
      filled[:, c] = np.interp(t, t[ok], x[ok, c])
  y = scipy.signal.resample_poly(filled, up, down, axis=0, padtype="line")[:n_out]
  nearest = np.minimum(np.round(np.arange(n_out) * down / up).astype(np.int64), x.shape[0] - 1)
  y[nan[nearest]] = np.nan
  return y


def quantise(x_mv: np.ndarray, gain: float = RESAMPLED_GAIN) -> tuple[np.ndarray, int]:
  """float mV (NaN = missing) -> `(int16 digital at gain, baseline 0, number of clipped samples)`.

  Values beyond +-32767 steps are clipped (the count is reported); -32768 stays the NaN sentinel.
  """
  y = np.round(x_mv * gain)
  nan = np.isnan(y)
  clipped = int(np.count_nonzero(np.abs(y[~nan]) > INT16_MAX))
  y = np.clip(np.where(nan, 0, y), -INT16_MAX, INT16_MAX).astype(np.int16)
  y[nan] = INT16_NAN
  return y, clipped


def _checked_fs(header) -> float:
  """The header's sampling rate; `unsupported_sampling_rate` unless finite and positive."""
  fs = float(header.fs) if header.fs is not None else math.nan
  if not math.isfinite(fs) or fs <= 0:
    raise br.RecordError(br.UNSUPPORTED_SAMPLING_RATE, f"fs={header.fs}")
  return fs


def _calibration(header, channels: list[int], flags: dict[str, str]):
  """`(gains per mV, baselines)` of `channels`; `malformed_header` for a missing/bad gain."""
  if not header.file_name or any(not header.file_name[ch] for ch in channels):
    raise br.RecordError(br.MALFORMED_HEADER, "no signal file name")
  gains, baselines = [], []
  for ch in channels:
    gain = header.adc_gain[ch] if header.adc_gain else None
    if gain is None or not math.isfinite(gain) or gain <= 0:
      raise br.RecordError(br.MALFORMED_HEADER, f"ADC gain {gain} of {header.sig_name[ch]!r}")
    unit = str((header.units or [""] * header.n_sig)[ch] or "").strip()
    factor = _UNIT_TO_PER_MV.get(unit.lower())
    if factor is None:  # Archives that omit units mean mV (WFDB's default for ECG).
      _add_flag(flags, br.UNKNOWN_UNITS, f"{header.sig_name[ch]}:{unit!r}")
      factor = 1.0
    gains.append(gain * factor)
    baseline = header.baseline[ch] if header.baseline else None
    baselines.append(float(baseline if baseline is not None else 0))
  return np.asarray(gains, np.float64), np.asarray(baselines, np.float64)


def _rdrecord_digital(path: pathlib.Path, channels: list[int], **kwargs) -> np.ndarray:
  """`wfdb.rdrecord(..., physical=False).d_signal`, its errors as `RecordError`s."""
  import wfdb  # Lazy.

  try:
    return wfdb.rdrecord(os.fspath(path), physical=False, channels=channels, **kwargs).d_signal
  except FileNotFoundError as e:
    raise br.RecordError(br.MISSING_SIGNAL_FILE, str(e)) from None
  except ValueError as e:
    # wfdb's message when a file holds fewer samples than the header promises.
    reason = br.TRUNCATED_SIGNAL if "not loaded correctly" in str(e) else br.READ_ERROR
    raise br.RecordError(reason, f"{type(e).__name__}: {e}") from None
  except Exception as e:
    raise br.RecordError(br.READ_ERROR, f"{type(e).__name__}: {e}") from None


def _to_schema(header, digital, channels: list[int], leads: list[int], gains: np.ndarray,
               baselines: np.ndarray, fs: float, sampling_rate: float,
               flags: dict[str, str]) -> Ecg:
  """Digital `(T, len(channels))` samples of `channels` -> an `Ecg` with them at `leads`.

  At the target rate, digital values that fit int16 are kept bit-exactly with their gain and
  baseline; otherwise the physical signal is resampled / re-quantised at `RESAMPLED_GAIN`.
  """
  digital = np.asarray(digital)  # (T, len(channels)) integers
  if digital.ndim != 2 or digital.shape[1] != len(channels):
    raise br.RecordError(br.READ_ERROR, f"unexpected signal shape {digital.shape}")
  invalid = np.zeros(digital.shape, bool)
  for j, ch in enumerate(channels):
    sentinel = _WFDB_INVALID.get(str(header.fmt[ch]))
    if sentinel is not None:
      invalid[:, j] = digital[:, j] == sentinel

  n = digital.shape[0]
  fits = bool(np.all(np.abs(digital[~invalid]) <= INT16_MAX)) and np.all(
      np.abs(baselines) <= 2**24)  # float32 holds integer baselines exactly up to 2**24.
  if fs == sampling_rate and fits:
    signal = np.full((n, NUM_LEADS), INT16_NAN, np.int16)
    signal[:, leads] = np.where(invalid, INT16_NAN, digital).astype(np.int16)
    gain = np.ones(NUM_LEADS, np.float32)
    baseline = np.zeros(NUM_LEADS, np.float32)
    gain[leads] = gains
    baseline[leads] = baselines
  else:
    x = (digital - baselines) / gains
    x[invalid] = np.nan
    if fs != sampling_rate:
      x = resample(x, fs, sampling_rate)
      _add_flag(flags, br.RESAMPLED, f"{fs:g} Hz -> {sampling_rate:g} Hz")
    else:
      _add_flag(flags, br.REQUANTISED, f"digital values beyond int16 at gain {gains.min():g}")
    q, clipped = quantise(x)
    if clipped:
      _add_flag(flags, br.CLIPPED, f"{clipped} samples beyond +-{INT16_MAX / RESAMPLED_GAIN} mV")
    signal = np.full((q.shape[0], NUM_LEADS), INT16_NAN, np.int16)
    signal[:, leads] = q
    gain = np.ones(NUM_LEADS, np.float32)
    gain[leads] = RESAMPLED_GAIN
    baseline = np.zeros(NUM_LEADS, np.float32)

  present = np.zeros(NUM_LEADS, bool)
  present[leads] = True
  return Ecg(
      record_name=header.record_name,
      signal=signal,
      gain=gain,
      baseline=baseline,
      lead_present=present,
      sampling_rate=float(sampling_rate),
      native_sampling_rate=fs,
      comments=list(header.comments or []),
      flags=flags)


def read_wfdb(path: str | os.PathLike, *, sampling_rate: float = SAMPLING_RATE) -> Ecg:
  """Reads a WFDB record (`.hea` + `.dat`/`.mat`) into `LEAD_ORDER` int16 at `sampling_rate`.

  Only the channels named like one of the 12 standard leads are read. At the target rate, digital
  values that fit int16 are stored unchanged with the header's gain and baseline (gain converted to
  per-mV from uV/V units), so `to_physical` reproduces `wfdb.rdrecord(path).p_signal` exactly.
  Otherwise the physical signal is resampled with `resample` and re-quantised with `quantise` at
  `RESAMPLED_GAIN`.

  Args:
    path: record path without extension.
    sampling_rate: Hz of the returned signal.

  Returns:
    An `Ecg` with flags for anything marked but kept.

  Raises:
    build_report.RecordError: when the record cannot be stored (reason in the report).
  """
  path = pathlib.Path(path)
  header = read_header(path)
  fs = _checked_fs(header)
  if header.sig_len == 0:
    raise br.RecordError(br.TOO_SHORT, "0 samples")
  channels, leads, flags = map_leads(header.sig_name or [])
  if not channels:
    raise br.RecordError(br.NO_STANDARD_LEADS, ",".join(map(str, header.sig_name or [])))
  gains, baselines = _calibration(header, channels, flags)
  _check_signal_files(header, path.parent, channels)
  digital = _read_format16(header, path.parent, channels)
  if digital is None:  # Any other layout: let wfdb decode it.
    digital = _rdrecord_digital(path, channels)
  return _to_schema(header, digital, channels, leads, gains, baselines, fs, sampling_rate, flags)


def read_single_lead(path: str | os.PathLike, *, lead: str, sampfrom: int = 0,
                     sampto: int | None = None, sampling_rate: float | None = None,
                     header=None) -> Ecg:
  """Reads samples `[sampfrom, sampto)` of one channel into `lead`'s column of the schema.

  For single-lead archives (Holter, patch and bedside-monitor recordings, often hours long): only
  the requested samples are read from disk (`wfdb.rdrecord(sampfrom=, sampto=)`), never the whole
  record. The channel is the one named like `lead` (case-insensitively), or the only channel of a
  one-channel record whatever its name (such archives name it `ECG`, `ch1`, ...). Samples are kept
  bit-exactly as in `read_wfdb`; the 11 other leads are absent.

  Args:
    path: record path without extension.
    lead: one of `LEAD_ORDER`: where the channel is stored.
    sampfrom: first sample.
    sampto: end sample (exclusive), clipped to the record's length; None: the record's end.
    sampling_rate: Hz of the returned signal; None keeps the record's own rate.
    header: the record's `read_header` result, when the caller already has it.

  Returns:
    An `Ecg` whose `signal` has `min(sampto, sig_len) - sampfrom` rows at the native rate.

  Raises:
    build_report.RecordError: `too_short` when the range holds no sample, `no_standard_leads`
      when no channel fits, and the reasons of `read_wfdb`.
  """
  path = pathlib.Path(path)
  header = header if header is not None else read_header(path)
  fs = _checked_fs(header)
  names = [str(name).strip() for name in header.sig_name or []]
  matches = [ch for ch, name in enumerate(names) if name.upper() == lead.upper()]
  if matches:
    channel = matches[0]
  elif len(names) == 1:
    channel = 0
  else:
    raise br.RecordError(br.NO_STANDARD_LEADS, f"no channel {lead!r} in {','.join(names)}")
  stop = header.sig_len if sampto is None else min(int(sampto), header.sig_len)
  if sampfrom < 0 or stop - sampfrom <= 0:
    raise br.RecordError(br.TOO_SHORT, f"samples [{sampfrom}, {stop}) of {header.sig_len}")
  flags: dict[str, str] = {}
  gains, baselines = _calibration(header, [channel], flags)
  _check_signal_files(header, path.parent, [channel])
  digital = _rdrecord_digital(path, [channel], sampfrom=int(sampfrom), sampto=int(stop))
  return _to_schema(header, digital, [channel], [lead_index(lead)], gains, baselines, fs,
                    fs if sampling_rate is None else float(sampling_rate), flags)


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
    _add_flag(ecg.flags, br.ZERO_PADDED, f"{n} -> {size} samples")
    n = size
  count = 1 if windows == "first" else n // size
  out = []
  for index in range(count):
    seg = signal[index * size:(index + 1) * size]
    mask, flags = usable_leads(seg, ecg.gain, ecg.baseline, ecg.lead_present)
    for flag, detail in flags.items():
      _add_flag(ecg.flags, flag, f"w{index}:{detail}" if count > 1 else detail)
    if not mask.any():
      _add_flag(ecg.flags, br.WINDOW_DROPPED, f"w{index}")
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
                        short_records: str = "skip", lead: str | None = None) -> Loaded:
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
        stop = math.ceil(WINDOW_SECONDS * _checked_fs(header)) if windows == "first" else None
        rec = read_single_lead(path, lead=lead, sampto=stop, sampling_rate=sampling_rate,
                               header=header)
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


def starcall(fn: Callable[..., Any], args_kwargs: tuple[Sequence[Any], dict[str, Any]]) -> Any:
  """`fn(*args, **kwargs)` from one item: per-item keyword arguments through `imap_ordered`."""
  args, kwargs = args_kwargs
  return fn(*args, **kwargs)


def record_loader(**kwargs) -> Callable[[Sequence[str | os.PathLike]], Loaded]:
  """A picklable `load_first_readable` with fixed keyword arguments (for `imap_ordered`)."""
  return functools.partial(load_first_readable, **kwargs)


# Cell/header values that mean "not recorded" (so they are missing, not unparsable).
MISSING_TOKENS = frozenset({"", "nan", "na", "n/a", "none", "null", "unknown", "?", "-", "nat"})


def parse_header_comments(comments: Sequence[str]) -> dict[str, str]:
  """`["Age: 78", "Sex: Male", ...]` -> `{"age": "78", "sex": "Male", ...}` (keys lower-case).

  The first occurrence of a key wins; lines without a colon are ignored.
  """
  out = {}
  for line in comments:
    key, sep, value = str(line).lstrip("#").partition(":")
    key = key.strip().lower()
    if sep and key and key not in out:
      out[key] = value.strip()
  return out


def parse_age(text: str | None) -> tuple[float, bool]:
  """Header age text -> `(years or NaN, parsed_ok)`; explicit "missing" tokens parse as NaN."""
  if text is None or text.strip().lower() in MISSING_TOKENS:
    return math.nan, True
  m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(?:y|yr|yrs|years?)?\s*", text, re.IGNORECASE)
  if not m:
    return math.nan, False
  return float(m.group(1)), True


def parse_sex(text: str | None) -> tuple[str | None, bool]:
  """Header sex text -> `("F" | "M" | None, parsed_ok)`."""
  if text is None or text.strip().lower() in MISSING_TOKENS:
    return None, True
  t = text.strip().lower()
  if t in ("f", "female", "w", "woman"):
    return "F", True
  if t in ("m", "male", "man"):
    return "M", True
  return None, False


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


def annotated_windows(paths: Sequence[str | os.PathLike], *, classes: Sequence[str],
                      field: str = "symbol", anchor: str = "center", window: int, lead: str,
                      seed: Sequence[int], annotator: str = "atr"
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
          rec = read_single_lead(path, lead=lead, sampfrom=start, sampto=start + window,
                                 header=header)
          (win,) = cut_windows(rec, window_seconds=window / rec.native_sampling_rate)
        except br.RecordError as e:
          errors.append((r, e))
          continue
        found[label] = AnnotatedWindow(label=label, record=r, sample=int(samples[i]),
                                       start=start, window=win, flags=rec.flags)
    except br.RecordError as e:
      errors.append((r, e))
    except Exception as e:  # Never let one record stop a build.
      errors.append((r, br.RecordError(br.READ_ERROR, f"{type(e).__name__}: {e}")))
  return [found[k] for k in sorted(found)], errors
