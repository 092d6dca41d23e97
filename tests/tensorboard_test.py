"""`clef_jax.tensorboard` event files, decoded by tensorboardX's generated `event.proto` classes
and checksummed by its own CRC-32C: the trainer's TensorBoard output without tensorboardX."""

import math
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

from clef_jax import monitoring, tensorboard

event_pb2 = pytest.importorskip("tensorboardX.proto.event_pb2")
tbx_crc32c = pytest.importorskip("tensorboardX.crc32c")


def read_events(path):
  """The events of one file, every record's two checksums verified."""
  from tensorboardX.record_writer import masked_crc32c

  data, events, pos = path.read_bytes(), [], 0
  while pos < len(data):
    header = data[pos : pos + 8]
    (length,) = struct.unpack("<Q", header)
    (header_crc,) = struct.unpack("<I", data[pos + 8 : pos + 12])
    body = data[pos + 12 : pos + 12 + length]
    (body_crc,) = struct.unpack("<I", data[pos + 12 + length : pos + 16 + length])
    assert header_crc == masked_crc32c(header) and body_crc == masked_crc32c(body)
    events.append(event_pb2.Event.FromString(body))
    pos += 16 + length
  assert pos == len(data)
  return events


def scalars(events):
  return {
    (e.step, v.tag): v.simple_value
    for e in events
    if e.HasField("summary")
    for v in e.summary.value
  }


def test_crc32c_matches_the_standard_and_tensorboardx():
  assert tensorboard.crc32c(b"123456789") == 0xE3069283  # The CRC-32C check value.
  rng = np.random.default_rng(0)
  for n in (0, 1, 7, 8, 100, 4097):
    data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
    assert tensorboard.crc32c(data) == tbx_crc32c.crc32c(data)


def test_event_fields_decode_as_protobuf():
  e = event_pb2.Event.FromString(
    tensorboard.encode_event(wall_time=1.5, step=-3, scalars={"a/b": 0.1, "c": math.nan})
  )
  assert e.wall_time == 1.5 and e.step == -3
  assert [v.tag for v in e.summary.value] == ["a/b", "c"]
  assert e.summary.value[0].simple_value == np.float32(0.1) and math.isnan(
    e.summary.value[1].simple_value
  )
  e = event_pb2.Event.FromString(
    tensorboard.encode_event(wall_time=0.0, step=2**40, file_version="brain.Event:2")
  )
  assert e.step == 2**40 and e.file_version == "brain.Event:2"
  e = event_pb2.Event.FromString(
    tensorboard.encode_event(wall_time=0.0, step=7, session_start=True)
  )
  assert e.session_log.status == event_pb2.SessionLog.START and e.step == 7


def test_monitor_writes_scalars_and_a_resume_purges(tmp_path):
  rows = [{"loss": 1.0 / (s + 1), "lr": 1e-3 * s} for s in range(4)]
  m = monitoring.Monitor(
    tmp_path, total_steps=4, start_step=0, signals_per_step=2, every_steps=2, printer=lambda s: None
  )
  for s in range(3):
    m.write(s, rows[s])
  m.close()
  # Resumed at step 2 (a checkpoint of step 2): the event for step 3 of the first start is stale.
  m = monitoring.Monitor(
    tmp_path, total_steps=4, start_step=2, signals_per_step=2, every_steps=2, printer=lambda s: None
  )
  m.write(2, rows[2])
  m.write(3, rows[3])
  m.scalars("eval/probe", {"auroc": 0.75}, 4)
  m.close()
  first, second = sorted((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
  a, b = read_events(first), read_events(second)
  assert a[0].file_version == "brain.Event:2" and b[0].file_version == "brain.Event:2"
  assert not any(e.HasField("session_log") for e in a)
  assert [e.step for e in b if e.HasField("session_log")] == [2]
  got = scalars(a)
  assert got[(2, "train/loss")] == np.float32(0.5) and got[(2, "train/lr")] == np.float32(1e-3)
  assert {s for s, _ in got} == {2}  # Every 2 steps: after steps 1 and 3 (0-based) only.
  got = scalars(b)
  assert got[(4, "train/loss")] == np.float32(0.25) and got[(4, "eval/probe/auroc")] == 0.75
  assert {t for s, t in got if s == 4} == {
    "train/loss",
    "train/lr",
    "train/steps_per_sec",
    "eval/probe/auroc",
  }


def test_monitor_does_not_import_torch(tmp_path):
  pytest.importorskip("torch")
  code = (
    "import sys; from clef_jax import monitoring\n"
    f"m = monitoring.Monitor({str(tmp_path)!r}, total_steps=1, start_step=0, signals_per_step=2, every_steps=1)\n"
    "m.write(0, {'loss': 1.0}); m.close()\n"
    "assert 'torch' not in sys.modules and 'tensorboardX' not in sys.modules, 'imported'\n"
  )
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
