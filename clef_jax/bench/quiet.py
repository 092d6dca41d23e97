"""Machine load around a benchmark, and whether its numbers may be called quiet.

Every `python -m clef_jax.bench` command prints the load average when it starts and when it ends,
and stores both in its JSON. A run that started while the 1-minute load average was above
`QUIET_LOAD` still runs, but its result is labelled `NOT QUIET (load x.xx)`: other work was
competing for the cores, and PyTorch's OpenMP threads lose more under contention than XLA's, so
such numbers mislead in both directions.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any

# Highest 1-minute load average at the start for which a run counts as quiet.
QUIET_LOAD = 0.5


def _loadavg() -> tuple[float, float, float]:
  try:
    return tuple(float(x) for x in os.getloadavg())  # type: ignore[return-value]
  except OSError:  # Not available on this platform.
    return (float("nan"),) * 3


def _format(load: tuple[float, float, float]) -> str:
  return " ".join(f"{x:.2f}" for x in load) + " (1, 5, 15 min)"


class MachineLoad:
  """Reads the load average now (and prints it); `finish()` reads it again and labels the run."""

  def __init__(self, *, verbose: bool = True):
    self.start = _loadavg()
    self.verbose = verbose
    if verbose:
      print(f"load average at start: {_format(self.start)}; {os.cpu_count()} CPUs", flush=True)

  @property
  def quiet(self) -> bool:
    """True when the 1-minute load was at most `QUIET_LOAD` before the run (NaN: not quiet)."""
    return self.start[0] <= QUIET_LOAD

  @property
  def label(self) -> str:
    return "quiet" if self.quiet else f"NOT QUIET (load {self.start[0]:.2f})"

  def finish(self) -> dict[str, Any]:
    """Prints the end load and the label; returns the JSON record of both."""
    end = _loadavg()
    if self.verbose:
      print(
        f"load average at end: {_format(end)}; run: {self.label} (quiet means a 1-min load "
        f"<= {QUIET_LOAD} at the start)",
        flush=True,
      )
    return {
      "load_start": list(self.start),
      "load_end": list(end),
      "quiet": self.quiet,
      "label": self.label,
      "quiet_threshold": QUIET_LOAD,
    }


def write_json(path: str | os.PathLike, data: Any) -> None:
  """Writes `data` as JSON atomically (a reader sees the old file or the whole new one)."""
  from clef_jax import files

  path = pathlib.Path(path)
  files.atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n")
