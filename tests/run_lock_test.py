"""Tests for `clef_jax.run_lock`: one trainer per workdir, never a stale lock after kill -9."""

import os
import signal
import socket
import subprocess
import sys

import pytest

from clef_jax import run_lock

HOLD = (
  "import sys, time; from clef_jax import run_lock; run_lock.RunLock(sys.argv[1]); "
  "print('locked', flush=True); time.sleep(600)"
)


def test_a_second_holder_is_refused_until_the_first_is_killed(tmp_path):
  holder = subprocess.Popen(
    [sys.executable, "-c", HOLD, str(tmp_path)],
    stdout=subprocess.PIPE,
    text=True,
    env=dict(os.environ, JAX_PLATFORMS="cpu"),
  )
  try:
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(run_lock.WorkdirLocked) as e:
      run_lock.RunLock(tmp_path)
    message = str(e.value)
    assert "\n" not in message and str(tmp_path / "train.lock") in message
    assert f"pid {holder.pid} on {socket.gethostname()}" in message and "--workdir" in message
  finally:
    holder.send_signal(signal.SIGKILL)  # No chance to clean anything up.
    holder.wait()
  # The kernel dropped the dead holder's lock: the next trainer gets it, and records itself.
  with run_lock.RunLock(tmp_path) as lock:
    assert f'"pid": {os.getpid()}' in lock.path.read_text()
    with pytest.raises(run_lock.WorkdirLocked, match=f"pid {os.getpid()} "):
      run_lock.RunLock(tmp_path)  # Also within one process.
  run_lock.RunLock(tmp_path).release()  # Released on exit from `with`.
