"""WFDB signal files: checked before reading, read fast where they are plain format 16.

`check_signal_files` finds absent or truncated files from the header alone; `read_format16`
reads MIMIC-IV-ECG / PTB-XL / Challenge files with numpy; `rdrecord_digital` is `wfdb.rdrecord`
for every other format. Problems raise `build_report.RecordError`. `clef_jax.data.wfdb_io`
turns what they read into the stored schema.
"""

from __future__ import annotations

import math
import os
import pathlib

import numpy as np

from clef_jax import build_report as br

# WFDB's "invalid sample" digital value per storage format (WFDB signal-file spec).
WFDB_INVALID = {
  "8": None,
  "16": -(2**15),
  "61": -(2**15),
  "80": -(2**7),
  "160": -(2**15),
  "212": -(2**11),
  "310": -(2**9),
  "311": -(2**9),
  "24": -(2**23),
  "32": -(2**31),
  "508": -(2**7),
  "516": -(2**15),
  "524": -(2**23),
}
# Bytes per sample per format, to detect truncated files before reading them. The FLAC formats
# (5xx) are compressed and cannot be size-checked.
_BYTES_PER_SAMPLE = {
  "8": 1,
  "16": 2,
  "61": 2,
  "80": 1,
  "160": 2,
  "212": 1.5,
  "310": 4 / 3,
  "311": 4 / 3,
  "24": 3,
  "32": 4,
}


def check_signal_files(header, record_dir: pathlib.Path, channels: list[int]):
  """Raises `RecordError` if a needed signal file is absent or shorter than the header implies."""
  fmt = header.fmt or []
  spf = [s or 1 for s in (header.samps_per_frame or [1] * header.n_sig)]
  offsets = header.byte_offset or [None] * header.n_sig
  for file_name in sorted({header.file_name[ch] for ch in channels}):
    path = record_dir / file_name
    if not path.is_file():
      raise br.RecordError(br.MISSING_SIGNAL_FILE, file_name)
    in_file = [ch for ch in range(header.n_sig) if header.file_name[ch] == file_name]
    bps = _BYTES_PER_SAMPLE.get(str(fmt[in_file[0]]))
    if bps is None or header.sig_len is None:
      continue  # Compressed or length-less: leave it to the reader.
    frame = sum(spf[ch] for ch in in_file)
    expected = (offsets[in_file[0]] or 0) + math.ceil(header.sig_len * frame * bps)
    size = path.stat().st_size
    if size < expected:
      raise br.RecordError(br.TRUNCATED_SIGNAL, f"{file_name}: {size} of {expected} bytes")


def read_format16(header, record_dir: pathlib.Path, channels: list[int]) -> np.ndarray | None:
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
    for ch in range(n)
    if header.file_name[ch] in {header.file_name[c] for c in channels}
  ):
    return None
  out = np.empty((header.sig_len, len(channels)), np.int16)
  for file_name in {header.file_name[ch] for ch in channels}:
    in_file = [ch for ch in range(n) if header.file_name[ch] == file_name]
    data = np.fromfile(
      record_dir / file_name,
      dtype="<i2",
      count=header.sig_len * len(in_file),
      offset=offsets[in_file[0]] or 0,
    ).reshape(header.sig_len, len(in_file))
    for j, ch in enumerate(channels):
      if ch in in_file:
        out[:, j] = data[:, in_file.index(ch)]
  return out


def rdrecord_digital(path: pathlib.Path, channels: list[int], **kwargs) -> np.ndarray:
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
