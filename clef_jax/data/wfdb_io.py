"""Reading WFDB records (`.hea` + `.dat`/`.mat`) into the stored schema (`clef_jax.data.schema`).

Leads are matched by name (case-insensitively, never by position), other sampling rates are
resampled to the target rate (`clef_jax.data.signal.resample`), and every problem either raises
`build_report.RecordError` (the record is skipped) or is returned as a flag (the record is kept);
see `clef_jax.build_report`. Cutting a record into stored windows is `clef_jax.data.windows`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
from collections.abc import Sequence

import numpy as np

from clef_jax import build_report as br
from clef_jax.data import wfdb_signal
from clef_jax.data.schema import (
  INT16_NAN,
  LEAD_ORDER,
  NUM_LEADS,
  SAMPLING_RATE,
  lead_index,
  to_physical,
)
from clef_jax.data.signal import resample
from clef_jax.data.wfdb_header import checked_fs, read_header  # noqa: F401  (re-exported)

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
  signal: np.ndarray  # (W, 12) int16
  gain: np.ndarray  # (12,) float32
  baseline: np.ndarray  # (12,) float32
  lead_mask: np.ndarray  # (12,) bool
  sampling_rate: float

  def features(self) -> dict[str, np.ndarray]:
    return {
      "signal": self.signal,
      "gain": self.gain,
      "baseline": self.baseline,
      "lead_mask": self.lead_mask,
      "sampling_rate": np.float32(self.sampling_rate),
    }


def add_flag(flags: dict[str, str], flag: str, detail: str):
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
      add_flag(flags, flag, repr(name))
      continue
    if lead in leads:  # Keep the first channel of a repeated lead.
      add_flag(flags, br.DUPLICATE_LEAD, repr(name))
      continue
    channels.append(ch)
    leads.append(lead)
  absent = [LEAD_ORDER[i] for i in range(NUM_LEADS) if i not in leads]
  if channels and absent:
    add_flag(flags, br.MISSING_LEADS, ",".join(absent))
  return channels, leads, flags


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
      add_flag(flags, br.UNKNOWN_UNITS, f"{header.sig_name[ch]}:{unit!r}")
      factor = 1.0
    gains.append(gain * factor)
    baseline = header.baseline[ch] if header.baseline else None
    baselines.append(float(baseline if baseline is not None else 0))
  return np.asarray(gains, np.float64), np.asarray(baselines, np.float64)


def _to_schema(
  header,
  digital,
  channels: list[int],
  leads: list[int],
  gains: np.ndarray,
  baselines: np.ndarray,
  fs: float,
  sampling_rate: float,
  flags: dict[str, str],
) -> Ecg:
  """Digital `(T, len(channels))` samples of `channels` -> an `Ecg` with them at `leads`.

  At the target rate, digital values that fit int16 are kept bit-exactly with their gain and
  baseline; otherwise the physical signal is resampled / re-quantised at `RESAMPLED_GAIN`.
  """
  digital = np.asarray(digital)  # (T, len(channels)) integers
  if digital.ndim != 2 or digital.shape[1] != len(channels):
    raise br.RecordError(br.READ_ERROR, f"unexpected signal shape {digital.shape}")
  invalid = np.zeros(digital.shape, bool)
  for j, ch in enumerate(channels):
    sentinel = wfdb_signal.WFDB_INVALID.get(str(header.fmt[ch]))
    if sentinel is not None:
      invalid[:, j] = digital[:, j] == sentinel

  n = digital.shape[0]
  fits = bool(np.all(np.abs(digital[~invalid]) <= INT16_MAX)) and np.all(
    np.abs(baselines) <= 2**24
  )  # float32 holds integer baselines exactly up to 2**24.
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
      x = resample(x, fs, sampling_rate, axis=0, padtype="line", bridge_nan=True)
      add_flag(flags, br.RESAMPLED, f"{fs:g} Hz -> {sampling_rate:g} Hz")
    else:
      add_flag(flags, br.REQUANTISED, f"digital values beyond int16 at gain {gains.min():g}")
    q, clipped = quantise(x)
    if clipped:
      add_flag(flags, br.CLIPPED, f"{clipped} samples beyond +-{INT16_MAX / RESAMPLED_GAIN} mV")
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
    flags=flags,
  )


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
  fs = checked_fs(header)
  if header.sig_len == 0:
    raise br.RecordError(br.TOO_SHORT, "0 samples")
  channels, leads, flags = map_leads(header.sig_name or [])
  if not channels:
    raise br.RecordError(br.NO_STANDARD_LEADS, ",".join(map(str, header.sig_name or [])))
  gains, baselines = _calibration(header, channels, flags)
  wfdb_signal.check_signal_files(header, path.parent, channels)
  digital = wfdb_signal.read_format16(header, path.parent, channels)
  if digital is None:  # Any other layout: let wfdb decode it.
    digital = wfdb_signal.rdrecord_digital(path, channels)
  return _to_schema(header, digital, channels, leads, gains, baselines, fs, sampling_rate, flags)


def read_single_lead(
  path: str | os.PathLike,
  *,
  lead: str,
  sampfrom: int = 0,
  sampto: int | None = None,
  sampling_rate: float | None = None,
  header=None,
  channel: int | None = None,
) -> Ecg:
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
    channel: read this channel (0-based) whatever its name, e.g. a Holter's first channel
      (named `X`, `ch1`, ...) stored in `lead`'s column; None: match by name as above.

  Returns:
    An `Ecg` whose `signal` has `min(sampto, sig_len) - sampfrom` rows at the native rate.

  Raises:
    build_report.RecordError: `too_short` when the range holds no sample, `no_standard_leads`
      when no channel fits, and the reasons of `read_wfdb`.
  """
  path = pathlib.Path(path)
  header = header if header is not None else read_header(path)
  fs = checked_fs(header)
  names = [str(name).strip() for name in header.sig_name or []]
  matches = [ch for ch, name in enumerate(names) if name.upper() == lead.upper()]
  if channel is not None:
    if not 0 <= channel < len(names):
      raise br.RecordError(br.NO_STANDARD_LEADS, f"no channel {channel} in {','.join(names)}")
  elif matches:
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
  wfdb_signal.check_signal_files(header, path.parent, [channel])
  digital = wfdb_signal.rdrecord_digital(path, [channel], sampfrom=int(sampfrom), sampto=int(stop))
  return _to_schema(
    header,
    digital,
    [channel],
    [lead_index(lead)],
    gains,
    baselines,
    fs,
    fs if sampling_rate is None else float(sampling_rate),
    flags,
  )
