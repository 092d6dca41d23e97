"""How a training run stops and ends: signals, host copies, the export and the probe.

`StopSignal` turns SIGTERM / SIGINT into a flag `train_loop.train_and_evaluate` checks between
steps; the rest runs once training is done: the backbone gathered to the host, written as a
PyTorch file, and probed with the downstream protocol of `clef_jax.evaluation` (so it prints the
evaluate CLI's table). Nothing here reads flags.
"""

from __future__ import annotations

import os
import pathlib
import signal
import time
from typing import Any

import jax
import ml_collections

from clef_jax import weights


def _log(msg: str, *args: Any) -> None:
  """Console line from process 0 only (every process logs through absl otherwise)."""
  if jax.process_index() == 0:
    print(msg % args if args else msg, flush=True)


class StopSignal:
  """SIGTERM or SIGINT (Ctrl-C) -> a flag the loop checks between steps (single process).

  The loop then saves the current step and stops. A second SIGINT before that save started
  raises `KeyboardInterrupt` (the CLI exits without a traceback; a save already under way is
  finished first, and Orbax's atomic writes never leave a half-written step as the latest).
  Multi-process runs leave SIGTERM to JAX's preemption notifier and ask the checkpoint manager
  (`reached_preemption`), which agrees on one step across hosts; SIGINT there stops the process
  at once.
  """

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.requested: int | None = None  # The signal number once one arrived.
    self._previous = {}
    if jax.process_count() == 1:
      self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}

  def _handle(self, signum, frame):
    del frame
    if self.requested == signal.SIGINT and signum == signal.SIGINT:
      raise KeyboardInterrupt
    if self.requested is None:
      self.requested = signum
      if signum == signal.SIGINT:
        _log(
          "interrupted: saving a checkpoint of this step, then stopping (Ctrl-C again to "
          "stop without saving it)"
        )

  @property
  def name(self) -> str:
    return signal.Signals(self.requested or signal.SIGTERM).name

  def restore(self):
    for s, previous in self._previous.items():
      signal.signal(s, previous)


def host_metrics(metrics: dict[str, jax.Array]) -> dict[str, float]:
  return {k: float(v) for k, v in jax.device_get(metrics).items()}


def gather_to_host(tree: Any) -> Any:
  """Fully-addressable numpy copy of a (possibly fsdp-sharded, multi-process) pytree."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  from jax.experimental import multihost_utils

  return multihost_utils.process_allgather(tree, tiled=True)


def export_backbone(
  backbone: Any, workdir: pathlib.Path, config: ml_collections.ConfigDict
) -> str | None:
  """Writes the backbone as a PyTorch file into `workdir/export/` (process 0)."""
  fmt = config.ckpt.export_format
  ext = weights.SUFFIXES.get(fmt, ".ckpt")
  # Named like the released weights (clef_small.ckpt, docs/method.md §I); other methods get their name.
  path = workdir / "export" / f"{config.method}_{config.model.size}{ext}"
  try:
    path.parent.mkdir(exist_ok=True)
    weights.save_backbone(
      backbone, path, backbone=config.model.name, size=config.model.size, format=fmt
    )
  except ImportError as e:
    _log("export: skipped (%s)", e)
    return None
  _log(
    "export: %s (%s format%s)",
    path,
    fmt,
    "; the official CLEF code loads it" if config.model.name == "net1d" else "",
  )
  return os.fspath(path)


def probe_lead(config: ml_collections.ConfigDict) -> str:
  """The end-of-run probe's lead: `evals.probe.data.lead`, else the pretraining lead when it names
  one (`input.lead=II` probes lead II), else lead I (the paper's evaluation lead)."""
  if config.evals.probe.data.lead:
    return config.evals.probe.data.lead
  return config.input.lead if config.input.lead != "random" else "I"


def run_probe(
  model,
  backbones: dict[str, Any],
  dataset_dir: pathlib.Path,
  config: ml_collections.ConfigDict,
  workdir: pathlib.Path,
) -> dict[str, Any]:
  """The downstream protocol on each backbone (label -> host params); prints and saves the table.

  Writes `workdir/eval/` (`report.md`, `report.json`, `predictions.npz`) like the evaluate CLI.

  Returns:
    The report without its predictions (JSON-serialisable).
  """
  from clef_jax.evaluation import models as eval_models
  from clef_jax.evaluation import protocol
  from clef_jax.evaluation import report as report_lib

  start = time.monotonic()
  probe_cfg = config.evals.probe.copy_and_resolve_references()
  probe_cfg.data.data_dir = probe_cfg.dataset or os.fspath(dataset_dir)
  probe_cfg.data.lead = probe_lead(config)
  probe_cfg.data.window = probe_cfg.data.window or config.input.window
  probe_cfg.seed = config.seed
  entries = [
    eval_models.Backbone(
      label=label,
      name=config.model.name,
      size=config.model.size,
      source=source,
      model=model,
      params=params,
    )
    for label, (source, params) in backbones.items()
  ]
  report = protocol.evaluate(probe_cfg, entries)
  text = report_lib.write_report(report, workdir / "eval", plots=probe_cfg.plots)
  _log(
    "eval: linear probe on frozen embeddings (lead %s, %.0f s)\n%s",
    probe_cfg.data.lead,
    time.monotonic() - start,
    text,
  )
  return {k: v for k, v in report.items() if k != "predictions"}
