"""WFDB headers: the plain single-segment syntax parsed directly, everything else by `wfdb`.

`read_header` is what every reader starts with; `checked_fs` the sampling-rate check they share.
"""

from __future__ import annotations

import math
import os
import pathlib
import re
import types

from clef_jax import build_report as br

# The common single-segment header syntax (WFDB header spec); anything else goes to wfdb.
_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_RECORD_LINE = re.compile(
  rf"^([^\s/]+)\s+(\d+)\s+({_NUM})(?:/{_NUM})?(?:\({_NUM}\))?"
  r"(?:\s+(\d+))?(?:\s+\S+)*\s*$"
)
_SIGNAL_LINE = re.compile(
  rf"^(\S+)\s+(\d+)(?:x(\d+))?(?::(\d+))?(?:\+(\d+))?\s+({_NUM})(?:\((-?\d+)\))?"
  r"(?:/(\S+))?\s+(\d+)\s+(-?\d+)\s+(-?\d+)\s+(-?\d+)\s+(\d+)\s+(\S.*?)\s*$"
)


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
    record_name=m.group(1),
    n_sig=n_sig,
    fs=fs,
    sig_len=int(m.group(4)),
    comments=comments,
    file_name=[],
    fmt=[],
    samps_per_frame=[],
    skew=[],
    byte_offset=[],
    adc_gain=[],
    baseline=[],
    units=[],
    sig_name=[],
  )
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


def checked_fs(header) -> float:
  """The header's sampling rate; `unsupported_sampling_rate` unless finite and positive."""
  fs = float(header.fs) if header.fs is not None else math.nan
  if not math.isfinite(fs) or fs <= 0:
    raise br.RecordError(br.UNSUPPORTED_SAMPLING_RATE, f"fs={header.fs}")
  return fs
