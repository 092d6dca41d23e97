"""TensorBoard scalar event files, written without TensorFlow, tensorboardX or torch.

An event file is a TFRecord stream of `tensorflow.Event` protocol buffers: each record is its
length (uint64, little-endian), the masked CRC-32C of those 8 bytes, the serialized event and
its masked CRC-32C. The trainer only logs scalars, so the few fields it needs are encoded here
by hand (`event.proto`, `summary.proto` of TensorFlow):

    Event        wall_time = 1 (double), step = 2 (int64), file_version = 3 (string),
                 summary = 5 (Summary), session_log = 7 (SessionLog)
    Summary      value = 1 (repeated Value); Value: tag = 1 (string), simple_value = 2 (float)
    SessionLog   status = 1 (enum; START = 1)

A start at step `purge_step` > 0 (a resumed run) writes `SessionLog.START` at that step, so
TensorBoard hides the events a killed run logged after its last checkpoint.
"""

from __future__ import annotations

import itertools
import os
import pathlib
import socket
import struct
import time

FILE_VERSION = "brain.Event:2"
SESSION_START = 1


def _crc32c_table() -> tuple[int, ...]:
  table = []
  for n in range(256):
    c = n
    for _ in range(8):
      c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1  # Castagnoli, reflected.
    table.append(c)
  return tuple(table)


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
  """CRC-32C (Castagnoli), as TFRecord checksums use it."""
  c = 0xFFFFFFFF
  for b in data:
    c = _TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
  return c ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
  c = crc32c(data)
  return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(n: int) -> bytes:
  n &= (1 << 64) - 1  # int64 fields: negative values as their two's complement.
  out = bytearray()
  while True:
    byte, n = n & 0x7F, n >> 7
    out.append(byte | (0x80 if n else 0))
    if not n:
      return bytes(out)


def _field(number: int, wire_type: int, payload: bytes) -> bytes:
  return _varint(number << 3 | wire_type) + payload


def _bytes_field(number: int, payload: bytes) -> bytes:
  return _field(number, 2, _varint(len(payload)) + payload)


def encode_event(
  *,
  wall_time: float,
  step: int,
  file_version: str | None = None,
  scalars: dict[str, float] | None = None,
  session_start: bool = False,
) -> bytes:
  """One serialized `Event`: a file version, a `Summary` of simple values, or a session start."""
  out = _field(1, 1, struct.pack("<d", wall_time)) + _field(2, 0, _varint(step))
  if file_version is not None:
    out += _bytes_field(3, file_version.encode())
  if scalars:
    values = b"".join(
      _bytes_field(1, _bytes_field(1, tag.encode()) + _field(2, 5, struct.pack("<f", value)))
      for tag, value in scalars.items()
    )
    out += _bytes_field(5, values)
  if session_start:
    out += _bytes_field(7, _field(1, 0, _varint(SESSION_START)))
  return out


def record(data: bytes) -> bytes:
  """`data` framed as one TFRecord."""
  header = struct.pack("<Q", len(data))
  return (
    header
    + struct.pack("<I", masked_crc32c(header))
    + data
    + struct.pack("<I", masked_crc32c(data))
  )


class ScalarWriter:
  """Appends scalar summaries to a new event file in `logdir`.

  Args:
    logdir: the run's TensorBoard directory (created if missing).
    purge_step: the step a resumed run restarts at; TensorBoard then drops the events at and
      after it that earlier files hold. None (or 0) for a fresh run.
  """

  def __init__(self, logdir: str | os.PathLike, purge_step: int | None = None):
    self._file = None
    logdir = pathlib.Path(logdir)
    logdir.mkdir(parents=True, exist_ok=True)
    name = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}"
    for n in itertools.count():  # A new file; never another start's.
      self.path = logdir / (name if n == 0 else f"{name}.{n}")
      try:
        self._file = open(self.path, "xb")
        break
      except FileExistsError:
        continue
    now = time.time()
    self._write(encode_event(wall_time=now, step=purge_step or 0, file_version=FILE_VERSION))
    if purge_step:
      self._write(encode_event(wall_time=now, step=purge_step, session_start=True))
    self.flush()

  def _write(self, event: bytes) -> None:
    self._file.write(record(event))

  def add_scalars(self, scalars: dict[str, float], step: int) -> None:
    """One event holding every `tag: value` of `scalars` at `step`."""
    self._write(encode_event(wall_time=time.time(), step=step, scalars=scalars))
    self.flush()

  def flush(self) -> None:
    if self._file is not None:
      self._file.flush()

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
      self._file = None
