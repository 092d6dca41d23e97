"""One trainer per workdir: an exclusive `flock` on `<workdir>/train.lock`.

The kernel drops a `flock` when its process ends, however it ends (kill -9 included), so the lock
can never be left stale. The file itself stays (removing it would let a third process lock a
fresh inode while the second still holds the old one); it records who holds the lock, for the
refusal message. Multi-process runs take it in process 0 only: the other processes of the same
run share the workdir by design.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import pathlib
import socket

LOCK_NAME = "train.lock"


class WorkdirLocked(RuntimeError):
  """Another live process holds the workdir's lock."""


class RunLock:
  """Holds `<workdir>/train.lock` from construction until `release()` (or process exit).

  Raises:
    WorkdirLocked: one line naming the lock file and its holder.
  """

  def __init__(self, workdir: str | os.PathLike):
    self.path = pathlib.Path(workdir) / LOCK_NAME
    self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = _read_holder(self._fd)
      os.close(self._fd)
      self._fd = None
      raise WorkdirLocked(
        f"{self.path.parent} is in use by another trainer ({holder}; lock file {self.path}); "
        "wait for it to finish, stop it, or use another --workdir."
      ) from None
    info = {
      "pid": os.getpid(),
      "host": socket.gethostname(),
      "since": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    os.ftruncate(self._fd, 0)
    os.pwrite(self._fd, (json.dumps(info) + "\n").encode(), 0)

  def release(self) -> None:
    if self._fd is not None:
      fcntl.flock(self._fd, fcntl.LOCK_UN)
      os.close(self._fd)
      self._fd = None

  def __enter__(self) -> RunLock:
    return self

  def __exit__(self, *exc) -> None:
    self.release()


def _read_holder(fd: int) -> str:
  """`pid N on host H since T` from the lock file, or a neutral phrase if it is unreadable."""
  try:
    info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    return f"pid {info['pid']} on {info['host']} since {info['since']}"
  except (OSError, ValueError, KeyError, TypeError):
    return "holder unknown"
