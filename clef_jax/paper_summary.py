r"""The paper-format summary: per-task cells and the two cross-task averages, paired bootstrap.

The abstract of the CLEF paper (docs/method.md §G) compares models by two averages: the mean AUROC
over the classification tasks and the mean relative MAE change over the regression tasks, against
a reference model. This module computes both, each with a percentile interval from a *paired*
bootstrap: resample r draws the test records of every task anew (task t with its own seeded
stream, `metrics.bootstrap_counts`), and every model is scored on the same draws, so a model's
difference from the reference has an interval of its own that accounts for the shared test data.

    tasks = [TaskScores(name="ptbxl_rhythm", group="PTB-XL", kind="classification",
                        metric="macro_auroc", fn=lambda m, w: metrics.macro_auroc(y, s[m], w)),
             ...]
    summary = summarize(tasks, models=["clef", "random"], reference="random")

Reported differences, for model m against reference r (`value`, `low`, `high` each):

- classification, `auroc_points`: 100 · (mean AUROC_m − mean AUROC_r), absolute AUROC points;
  `auroc_relative_pct`: 100 · (mean AUROC_m − mean AUROC_r) / mean AUROC_r.
- regression, `mae_relative_pct`: the mean over tasks of 100 · (MAE_m,t − MAE_r,t) / MAE_r,t
  (negative = lower error than the reference; the abstract's "MAE reduction" is its negative);
  `mae_absolute`: the mean over tasks of MAE_m,t − MAE_r,t, in the tasks' own units (mmHg, %),
  which is only meaningful when the units agree, and is reported for completeness.

A resample in which a task's metric is undefined for some model (e.g. a class with no positives)
is dropped from that average for every model, so differences stay paired; the number of resamples
used is reported.
"""

from __future__ import annotations

import dataclasses
import zlib
from typing import Callable, Mapping, Sequence

import numpy as np

from clef_jax import metrics

KINDS = ("classification", "regression")


@dataclasses.dataclass(frozen=True)
class TaskScores:
  """One task's test-set metric, callable per model.

  Attributes:
    name: task name (a row of the table).
    group: dataset group the row is listed under.
    kind: "classification" (AUROC-type metric, higher is better) or "regression" (MAE).
    metric: the metric's name, for the table.
    n: number of test records (the bootstrap resamples these).
    fn: `fn(model, weights)`: the point estimate for `weights=None`, else `(B,)` values for
      `(B, n)` resample counts (the `metrics` module's convention).
  """
  name: str
  group: str
  kind: str
  metric: str
  n: int
  fn: Callable[[str, np.ndarray | None], "float | np.ndarray"]


def _seed(base: int, task: str) -> int:
  # A stable per-task stream (Python's hash() is salted per process).
  return (base * 1_000_003 + zlib.crc32(task.encode())) % (2**32)


def _interval(values: np.ndarray, point: float, confidence: float) -> dict[str, float | int]:
  low, high = metrics.percentile_interval(values, confidence)
  return {"value": float(point), "low": low, "high": high,
          "resamples": int(np.isfinite(values).sum())}


def summarize(tasks: Sequence[TaskScores], *, models: Sequence[str], reference: str,
              num_resamples: int = 1000, seed: int = 0, confidence: float = 0.95
              ) -> dict[str, object]:
  """Per-task cells and the cross-task averages with paired bootstrap intervals.

  Args:
    tasks: the tasks (any mix of classification and regression).
    models: model names, in column order.
    reference: the model the averages are compared against (one of `models`).
    num_resamples: bootstrap resamples.
    seed: base seed; task t uses a stream derived from it and the task's name.
    confidence: interval coverage.

  Returns:
    `{"models", "reference", "cells": {task: {model: {value, low, high, resamples}}},
    "tasks": [{name, group, kind, metric}], "classification": {...}, "regression": {...}}`, where
    the two averages hold per-model `mean` (mean AUROC / mean MAE) and, for models other than the
    reference, the differences listed in the module docstring. An average over no task is absent.
  """
  models = list(models)
  if reference not in models:
    raise ValueError(f"reference {reference!r} is not one of the models {models}.")
  names = [t.name for t in tasks]
  if len(set(names)) != len(names):
    raise ValueError(f"task names must be unique; got {names}.")
  for t in tasks:
    if t.kind not in KINDS:
      raise ValueError(f"task {t.name}: kind must be one of {KINDS}; got {t.kind!r}.")

  points: dict[str, dict[str, float]] = {}
  draws: dict[str, dict[str, np.ndarray]] = {}       # task -> model -> (num_resamples,)
  cells: dict[str, dict[str, dict[str, float | int]]] = {}
  for t in tasks:
    points[t.name] = {m: float(t.fn(m, None)) for m in models}
    chunks: dict[str, list[np.ndarray]] = {m: [] for m in models}
    for counts in metrics.bootstrap_counts(t.n, num_resamples=num_resamples,
                                           seed=_seed(seed, t.name)):
      for m in models:
        chunks[m].append(np.asarray(t.fn(m, counts), np.float64))
    draws[t.name] = {m: np.concatenate(chunks[m]) for m in models}
    cells[t.name] = {m: _interval(draws[t.name][m], points[t.name][m], confidence)
                     for m in models}

  out: dict[str, object] = {
      "models": models, "reference": reference, "confidence": confidence,
      "num_resamples": num_resamples, "cells": cells,
      "tasks": [{"name": t.name, "group": t.group, "kind": t.kind, "metric": t.metric}
                for t in tasks]}
  for kind in KINDS:
    chosen = [t.name for t in tasks if t.kind == kind]
    if chosen:
      out[kind] = _average(kind, chosen, models, reference, points, draws, confidence)
  return out


def _average(kind: str, chosen: list[str], models: list[str], reference: str,
             points: Mapping[str, Mapping[str, float]],
             draws: Mapping[str, Mapping[str, np.ndarray]], confidence: float
             ) -> dict[str, object]:
  """One cross-task average (mean over `chosen`) and its differences against `reference`."""
  # (tasks, models) point estimates and (tasks, models, resamples) draws.
  p = np.array([[points[t][m] for m in models] for t in chosen])
  d = np.stack([np.stack([draws[t][m] for m in models]) for t in chosen])
  # Drop a resample for everyone if any model's metric is undefined there in any task.
  ok = np.all(np.isfinite(d), axis=(0, 1))
  d = d[:, :, ok]
  ref = models.index(reference)
  result: dict[str, object] = {
      "tasks": list(chosen), "resamples": int(ok.sum()),
      "mean": {m: _interval(d[:, i].mean(axis=0), p[:, i].mean(), confidence)
               for i, m in enumerate(models)}}
  diffs: dict[str, dict[str, object]] = {}
  for i, m in enumerate(models):
    if i == ref:
      continue
    if kind == "classification":
      mean_m, mean_r = d[:, i].mean(axis=0), d[:, ref].mean(axis=0)
      pm, pr = p[:, i].mean(), p[:, ref].mean()
      diffs[m] = {
          "auroc_points": _interval(100.0 * (mean_m - mean_r), 100.0 * (pm - pr), confidence),
          "auroc_relative_pct": _interval(100.0 * (mean_m - mean_r) / mean_r,
                                          100.0 * (pm - pr) / pr, confidence)}
    else:
      rel = 100.0 * (d[:, i] - d[:, ref]) / d[:, ref]                   # (tasks, resamples)
      prel = 100.0 * (p[:, i] - p[:, ref]) / p[:, ref]
      diffs[m] = {
          "mae_relative_pct": _interval(rel.mean(axis=0), prel.mean(), confidence),
          "mae_absolute": _interval((d[:, i] - d[:, ref]).mean(axis=0),
                                    (p[:, i] - p[:, ref]).mean(), confidence)}
  result["versus_reference"] = diffs
  return result


def _cell(c: Mapping[str, float], digits: int) -> str:
  if not np.isfinite(c["value"]):
    return "n/a"
  return f"{c['value']:.{digits}f} [{c['low']:.{digits}f}, {c['high']:.{digits}f}]"


def format_markdown(summary: Mapping[str, object]) -> str:
  """The paper-format table (rows = tasks grouped by dataset, columns = models) and averages."""
  models = list(summary["models"])
  reference = summary["reference"]
  conf = int(round(100 * float(summary["confidence"])))
  lines = [f"Cells: point estimate [{conf} % paired bootstrap interval, "
           f"{summary['num_resamples']} resamples].", "",
           "| dataset | task | metric | " + " | ".join(models) + " |",
           "|---|---|---|" + "---|" * len(models)]
  for t in summary["tasks"]:
    digits = 3 if t["kind"] == "classification" else 2
    row = [_cell(summary["cells"][t["name"]][m], digits) for m in models]
    lines.append(f"| {t['group']} | {t['name']} | {t['metric']} | " + " | ".join(row) + " |")
  for kind, label in (("classification", "mean AUROC"), ("regression", "mean MAE")):
    avg = summary.get(kind)
    if not avg:
      continue
    digits = 3 if kind == "classification" else 2
    lines += ["", f"**{label}** over {len(avg['tasks'])} tasks "
              f"({avg['resamples']} resamples with every task defined):", "",
              "| model | " + label + " | vs " + str(reference) + " |", "|---|---|---|"]
    for m in models:
      vs = avg["versus_reference"].get(m)
      if vs is None:
        versus = "reference"
      elif kind == "classification":
        versus = (f"{_cell(vs['auroc_points'], 2)} AUROC points; "
                  f"{_cell(vs['auroc_relative_pct'], 2)} %")
      else:
        versus = (f"{_cell(vs['mae_relative_pct'], 2)} % mean relative MAE change; "
                  f"{_cell(vs['mae_absolute'], 2)} mean absolute MAE change")
      lines.append(f"| {m} | {_cell(avg['mean'][m], digits)} | {versus} |")
  return "\n".join(lines) + "\n"
