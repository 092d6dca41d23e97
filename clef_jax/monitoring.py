"""What a run leaves in its workdir besides checkpoints: metrics, console progress, plots, manifest.

    <workdir>/metrics.jsonl      one JSON object per step: {"step": s, "loss": ..., ...}
    <workdir>/tensorboard/       TensorBoard scalars (`clef_jax.tensorboard`: no TensorFlow)
    <workdir>/plots/*.png        loss terms, learning rate, clinical alignment (end of run)
    <workdir>/manifest.json      git sha, resolved config, package versions, devices, seeds,
                                 dataset build reports; one entry appended per (re)start

Only the writer process (process 0) touches these files. `metrics.jsonl` is rewritten on resume so
that it never holds steps the restored checkpoint has not done: after a restart it reads exactly
like an uninterrupted run (the kill/resume test compares it bit for bit).
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import math
import os
import pathlib
import platform
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from clef_jax import allocator, files, tensorboard

PACKAGES = (
  "jax",
  "jaxlib",
  "flax",
  "optax",
  "orbax-checkpoint",
  "grain",
  "tensorflow-datasets",
  "numpy",
  "scipy",
  "ml-collections",
  "torch",
  "clef_jax",
)


def read_metrics(workdir: str | os.PathLike) -> list[dict[str, Any]]:
  """The records of `metrics.jsonl`; a torn last line (killed mid-write) is ignored."""
  path = pathlib.Path(workdir) / "metrics.jsonl"
  if not path.exists():
    return []
  rows = []
  for line in path.read_text().splitlines():
    try:
      rows.append(json.loads(line))
    except json.JSONDecodeError:
      continue
  return rows


def _format_duration(seconds: float) -> str:
  if not math.isfinite(seconds):
    return "?"
  seconds = int(round(seconds))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class Monitor:
  """Per-step metrics to `metrics.jsonl`, every-N-steps console line and TensorBoard scalars.

  Args:
    workdir: run directory.
    total_steps: last step of the run (for the progress bar and ETA).
    start_step: first step this process will run (0, or the restored checkpoint's step).
    signals_per_step: single-lead signals through the backbone per step (2 views x batch).
    every_steps: console / TensorBoard period.
    enabled: False on non-writer processes (everything becomes a no-op).
    printer: where console lines go (default `print`, flushed).
  """

  def __init__(
    self,
    workdir: str | os.PathLike,
    *,
    total_steps: int,
    start_step: int,
    signals_per_step: int,
    every_steps: int,
    enabled: bool = True,
    printer=None,
  ):
    self.workdir = pathlib.Path(workdir)
    self.total_steps = total_steps
    self.signals_per_step = signals_per_step
    self.every_steps = max(1, every_steps)
    self.enabled = enabled
    self._print = printer or (lambda s: print(s, flush=True))
    self._tb = None
    self._file = None
    self._mark = (start_step, None)  # (step, time) of the last rate measurement
    if not enabled:
      return
    self.workdir.mkdir(parents=True, exist_ok=True)
    path = self.workdir / "metrics.jsonl"
    # Drop steps the checkpoint has not done (written after it, before a kill), and any torn line.
    kept = [r for r in read_metrics(self.workdir) if r.get("step", math.inf) < start_step]
    if path.exists() or kept:
      files.atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))
    self._file = open(path, "a", buffering=1)  # Line-buffered: a kill loses at most one line.
    self._tb = tensorboard.ScalarWriter(self.workdir / "tensorboard", purge_step=start_step)

  def start_timer(self, step: int) -> None:
    """Starts the rate measurement (call after compilation, so steps/s excludes it)."""
    self._mark = (step, time.monotonic())

  def write(self, step: int, metrics: Mapping[str, float]) -> None:
    """Records the metrics of train step `step` (0-based: the update that produced step+1)."""
    if not self.enabled:
      return
    row = {"step": int(step), **{k: float(v) for k, v in metrics.items()}}
    self._file.write(json.dumps(row) + "\n")
    done = step + 1
    if done % self.every_steps and done != self.total_steps:
      return
    mark_step, mark_time = self._mark
    now = time.monotonic()
    rate = (done - mark_step) / (now - mark_time) if mark_time and done > mark_step else math.nan
    self._mark = (done, now)
    frac = done / self.total_steps
    bar = "#" * int(20 * frac) + "." * (20 - int(20 * frac))
    terms = "  ".join(
      f"{k} {float(metrics[k]):.4f}" for k in ("weighted_nce", "alignment") if k in metrics
    )
    self._print(
      f"[{bar}] step {done}/{self.total_steps}  loss {float(metrics['loss']):.4f}"
      + (f"  ({terms})" if terms else "")
      + f"  lr {float(metrics.get('lr', math.nan)):.2e}  {rate:.2f} steps/s"
      f"  {rate * self.signals_per_step:.0f} signals/s"
      f"  ETA {_format_duration((self.total_steps - done) / rate if rate > 0 else math.nan)}"
    )
    scalars = {f"train/{k}": float(v) for k, v in metrics.items()}
    self._tb.add_scalars({**scalars, "train/steps_per_sec": rate}, done)

  def scalars(self, prefix: str, values: Mapping[str, float], step: int) -> None:
    """Extra scalars (e.g. `eval/probe/...`) to TensorBoard."""
    if self._tb is not None:
      self._tb.add_scalars({f"{prefix}/{k}": float(v) for k, v in values.items()}, step)

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
      self._file = None
    if self._tb is not None:
      self._tb.close()
      self._tb = None


# ------------------------------------------------------------------------------------------------
# Plots.
# ------------------------------------------------------------------------------------------------
PLOTS = {  # file -> (title, metric keys)
  "loss.png": ("Pretraining loss", ("loss", "weighted_nce", "alignment")),
  "lr.png": ("Learning rate", ("lr",)),
  "alignment.png": (
    "Clinical alignment and collapse monitors",
    ("risk_spearman", "pos_cos", "neg_cos", "embedding_std"),
  ),
}


def _smooth(values: Sequence[float], window: int) -> list[float]:
  """Trailing moving average that skips NaN (per-step losses are noisy)."""
  out, buf = [], []
  for v in values:
    if math.isfinite(v):
      buf.append(v)
    buf = buf[-window:]
    out.append(sum(buf) / len(buf) if buf else math.nan)
  return out


def plot_metrics(workdir: str | os.PathLike) -> list[pathlib.Path]:
  """Writes `plots/{loss,lr,alignment}.png` from `metrics.jsonl`; returns the files written."""
  import matplotlib  # Lazy: only at the end of a run.

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  rows = read_metrics(workdir)
  if not rows:
    return []
  out_dir = pathlib.Path(workdir) / "plots"
  out_dir.mkdir(exist_ok=True)
  steps = [r["step"] + 1 for r in rows]
  window = max(1, len(rows) // 25)
  written = []
  for name, (title, keys) in PLOTS.items():
    keys = [k for k in keys if any(k in r for r in rows)]
    if not keys:
      continue
    fig, ax = plt.subplots(figsize=(7, 4))
    for k in keys:
      values = [r.get(k, math.nan) for r in rows]
      (line,) = ax.plot(steps, values, alpha=0.25 if window > 1 and k != "lr" else 1.0, lw=1)
      if window > 1 and k != "lr":
        ax.plot(
          steps,
          _smooth(values, window),
          color=line.get_color(),
          lw=2,
          label=f"{k} (moving avg {window})",
        )
      else:
        line.set_label(k)
    ax.set_xlabel("step")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out_dir / name
    fig.savefig(path, dpi=100)
    plt.close(fig)
    written.append(path)
  return written


# ------------------------------------------------------------------------------------------------
# Run manifest.
# ------------------------------------------------------------------------------------------------
def git_state(repo: str | os.PathLike | None = None) -> dict[str, Any]:
  """`{"sha", "dirty"}` of the checkout this package runs from (None outside a git clone)."""
  repo = repo or pathlib.Path(__file__).resolve().parents[1]

  def git(*args):
    return subprocess.run(
      ["git", "-C", os.fspath(repo), *args], capture_output=True, text=True, timeout=10, check=True
    ).stdout.strip()

  try:
    return {"sha": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain"))}
  except (OSError, subprocess.SubprocessError):
    return {"sha": None, "dirty": None}


def package_versions(names: Sequence[str] = PACKAGES) -> dict[str, str | None]:
  versions = {}
  for name in names:
    try:
      versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      versions[name] = None
  return versions


def device_summary() -> dict[str, Any]:
  import jax

  devices = jax.devices()
  return {
    "backend": jax.default_backend(),
    "process_count": jax.process_count(),
    "device_count": len(devices),
    "local_device_count": jax.local_device_count(),
    "kinds": sorted({d.device_kind for d in devices}),
  }


def write_manifest(
  workdir: str | os.PathLike,
  *,
  config: Mapping[str, Any],
  start_step: int,
  seeds: Mapping[str, int],
  datasets: Mapping[str, Any],
) -> pathlib.Path:
  """Writes (or extends) `manifest.json`: enough to reproduce the run.

  The first start records everything; each restart appends to `starts` (time, step, git sha,
  command, versions), so a run resumed on another machine or commit says so.

  Args:
    workdir: run directory.
    config: the resolved config as a plain dict.
    start_step: step this start begins at.
    seeds: named seeds (`config.seed` and what derives from it).
    datasets: name -> dataset facts (path, sizes, `build_report.json` contents).
  """
  path = pathlib.Path(workdir) / "manifest.json"
  manifest = json.loads(path.read_text()) if path.exists() else {}
  start = {
    "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    "step": start_step,
    "git": git_state(),
    "command": [sys.executable] + sys.argv,
    "host": platform.node(),
    "python": platform.python_version(),
    "packages": package_versions(),
    "devices": device_summary(),
    "host_allocator": "cache" if allocator.active() else "system",
  }
  if not manifest:
    manifest = {
      "config": dict(config),
      "seeds": dict(seeds),
      "datasets": dict(datasets),
      "starts": [],
    }
  manifest["starts"].append(start)
  files.atomic_write_text(path, json.dumps(manifest, indent=2, default=str) + "\n")
  return path
