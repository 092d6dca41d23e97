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

Each interval is a percentile interval of the same statistic as its point estimate:

- a task with `valid` (the evaluation gives every AUROC task `metrics.classes_present`) uses only
  the resamples of its stream that hold a positive and a negative of every class its full test
  set has, drawing further resamples of the stream until `num_resamples` are kept
  (`metrics.valid_bootstrap_counts`); on those, its macro AUROC averages exactly the classes the
  point estimate averages, and it is never undefined;
- an average is over the same tasks in every resample as in the point estimate: resample k of the
  average combines the k-th kept resample of each task (the tasks' streams are independent, and
  every model is scored on the same resamples of a task, so differences stay paired).

A task whose point estimate is undefined for some model (e.g. no class with both positives and
negatives in its test set) is left out of the average, in the point estimate and in every
resample, and listed (`left_out`). A resample in which a remaining task's metric is still
undefined for some model (only possible for a task without `valid`) is dropped from that average
for every model; the number of resamples used is reported.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Callable, Mapping, Sequence

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
    number: the task's number in the paper's list (0 = none), for the table.
    unit: the metric's unit (regression), for the table.
    valid: `valid(counts)` -> `(B,)` bool, the resamples the task keeps (module docstring;
      `metrics.classes_present`); None keeps every resample.
  """

  name: str
  group: str
  kind: str
  metric: str
  n: int
  fn: Callable[[str, np.ndarray | None], float | np.ndarray]
  number: int = 0
  unit: str = ""
  valid: Callable[[np.ndarray], np.ndarray] | None = None


def task_seed(base: int, task: str) -> int:
  """The bootstrap seed of `task`: a stable per-task stream from `base` (Python's `hash()` is
  salted per process), `(base * 1_000_003 + crc32(task)) mod 2**32`."""
  return (base * 1_000_003 + zlib.crc32(task.encode())) % (2**32)


def _interval(values: np.ndarray, point: float, confidence: float) -> dict[str, float | int]:
  low, high = metrics.percentile_interval(values, confidence)
  return {
    "value": float(point),
    "low": low,
    "high": high,
    "resamples": int(np.isfinite(values).sum()),
  }


def summarize(
  tasks: Sequence[TaskScores],
  *,
  models: Sequence[str],
  reference: str,
  num_resamples: int = 1000,
  seed: int = 0,
  confidence: float = 0.95,
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
  draws: dict[str, dict[str, np.ndarray]] = {}  # task -> model -> (num_resamples,)
  cells: dict[str, dict[str, dict[str, float | int]]] = {}
  for t in tasks:
    points[t.name] = {m: float(t.fn(m, None)) for m in models}
    chunks: dict[str, list[np.ndarray]] = {m: [] for m in models}
    for counts in metrics.valid_bootstrap_counts(
      t.n, num_resamples=num_resamples, seed=task_seed(seed, t.name), valid=t.valid
    ):
      for m in models:
        chunks[m].append(np.asarray(t.fn(m, counts), np.float64))
    draws[t.name] = {m: np.concatenate(chunks[m]) for m in models}
    cells[t.name] = {m: _interval(draws[t.name][m], points[t.name][m], confidence) for m in models}

  out: dict[str, object] = {
    "models": models,
    "reference": reference,
    "confidence": confidence,
    "num_resamples": num_resamples,
    "cells": cells,
    "tasks": [
      {
        "name": t.name,
        "group": t.group,
        "kind": t.kind,
        "metric": t.metric,
        "n": t.n,
        "number": t.number,
        "unit": t.unit,
      }
      for t in tasks
    ],
  }
  for kind in KINDS:
    of_kind = [t.name for t in tasks if t.kind == kind]
    chosen = [n for n in of_kind if all(np.isfinite(points[n][m]) for m in models)]
    if chosen:
      out[kind] = _average(kind, chosen, models, reference, points, draws, confidence)
      out[kind]["left_out"] = [n for n in of_kind if n not in chosen]
  return out


def _average(
  kind: str,
  chosen: list[str],
  models: list[str],
  reference: str,
  points: Mapping[str, Mapping[str, float]],
  draws: Mapping[str, Mapping[str, np.ndarray]],
  confidence: float,
) -> dict[str, object]:
  """One cross-task average (mean over `chosen`) and its differences against `reference`."""
  # (tasks, models) point estimates and (tasks, models, resamples) draws: resample k combines
  # the k-th kept resample of every task (as many as the task with the fewest kept).
  p = np.array([[points[t][m] for m in models] for t in chosen])
  k = min(len(draws[t][models[0]]) for t in chosen)
  d = np.stack([np.stack([draws[t][m][:k] for m in models]) for t in chosen])
  # Drop a resample for everyone if any model's metric is undefined there in any task.
  ok = np.all(np.isfinite(d), axis=(0, 1))
  d = d[:, :, ok]
  ref = models.index(reference)
  result: dict[str, object] = {
    "tasks": list(chosen),
    "resamples": int(ok.sum()),
    "mean": {
      m: _interval(d[:, i].mean(axis=0), p[:, i].mean(), confidence) for i, m in enumerate(models)
    },
  }
  diffs: dict[str, dict[str, object]] = {}
  for i, m in enumerate(models):
    if i == ref:
      continue
    # A reference of 0 in a resample makes its relative change undefined (inf or NaN): that
    # resample is left out of the interval (`_interval` keeps the finite draws), without a warning.
    with np.errstate(divide="ignore", invalid="ignore"):
      diffs[m] = _versus_reference(kind, d[:, i], d[:, ref], p[:, i], p[:, ref], confidence)
  result["versus_reference"] = diffs
  return result


def _versus_reference(kind, d_m, d_r, p_m, p_r, confidence) -> dict[str, object]:
  """One model's differences to the reference: draws `d_*` (tasks, resamples), points `p_*`."""
  if kind == "classification":
    mean_m, mean_r = d_m.mean(axis=0), d_r.mean(axis=0)
    pm, pr = p_m.mean(), p_r.mean()
    return {
      "auroc_points": _interval(100.0 * (mean_m - mean_r), 100.0 * (pm - pr), confidence),
      "auroc_relative_pct": _interval(
        100.0 * (mean_m - mean_r) / mean_r, 100.0 * (pm - pr) / pr, confidence
      ),
    }
  rel = 100.0 * (d_m - d_r) / d_r  # (tasks, resamples)
  prel = 100.0 * (p_m - p_r) / p_r
  return {
    "mae_relative_pct": _interval(rel.mean(axis=0), prel.mean(), confidence),
    "mae_absolute": _interval((d_m - d_r).mean(axis=0), (p_m - p_r).mean(), confidence),
  }


def _cell(c: Mapping[str, float], digits: int, sign: str = "") -> str:
  if c["value"] is None or not np.isfinite(c["value"]):
    return "n/a"
  text = f"{c['value']:{sign}.{digits}f}"
  if c["low"] is None or not np.isfinite(c["low"]):
    return text
  return f"{text} [{c['low']:{sign}.{digits}f}, {c['high']:{sign}.{digits}f}]"


def ordered_tasks(
  summary: Mapping[str, object], group_order: Sequence[str] = ()
) -> list[Mapping[str, object]]:
  """The summary's tasks grouped by dataset: the groups of `group_order` first, then the others
  in order of appearance; within a group, the order given."""
  tasks = list(summary["tasks"])
  groups = list(
    dict.fromkeys(
      [g for g in group_order if any(t["group"] == g for t in tasks)] + [t["group"] for t in tasks]
    )
  )
  return [t for g in groups for t in tasks if t["group"] == g]


def format_markdown(
  summary: Mapping[str, object],
  *,
  group_titles: Mapping[str, str] | None = None,
  group_order: Sequence[str] = (),
) -> str:
  """The paper-format table and the two averages, in markdown.

  Rows = tasks grouped by dataset (`ordered_tasks`), columns = models, each cell the point
  estimate [its bootstrap interval]; then the mean AUROC over the classification tasks and the
  mean relative MAE change over the regression tasks, each against the reference model with
  its paired interval, in absolute points and in percent.
  """
  group_titles = group_titles or {}
  models = list(summary["models"])
  reference = summary["reference"]
  conf = int(round(100 * float(summary["confidence"])))
  lines = [
    f"Cells: point estimate [{conf} % bootstrap interval, {summary['num_resamples']} "
    "resamples of each task's test records, the same for every model].",
    "",
    "| dataset | # | task | metric | n test | " + " | ".join(models) + " |",
    "|---|---|---|---|---|" + "---|" * len(models),
  ]
  for t in ordered_tasks(summary, group_order):
    digits = 3 if t["kind"] == "classification" else 2
    arrow = "↑" if t["kind"] == "classification" else "↓"
    metric = f"{t['metric']}{' (' + t['unit'] + ')' if t.get('unit') else ''} {arrow}"
    row = [_cell(summary["cells"][t["name"]][m], digits) for m in models]
    lines.append(
      f"| {group_titles.get(t['group'], t['group'])} | {t.get('number') or ''} | "
      f"{t['name']} | {metric} | {t.get('n', '')} | " + " | ".join(row) + " |"
    )
  for kind in KINDS:
    avg = summary.get(kind)
    if not avg:
      continue
    left_out = avg.get("left_out") or []
    skipped = f"; left out, undefined for some model: {', '.join(left_out)}" if left_out else ""
    if kind == "classification":
      lines += [
        "",
        f"**mean AUROC** over {len(avg['tasks'])} tasks ({avg['resamples']} "
        f"resamples with every task defined{skipped}), against {reference} (paired "
        "bootstrap):",
        "",
        f"| model | mean AUROC ↑ | vs {reference}: AUROC points | vs {reference}: relative % |",
        "|---|---|---|---|",
      ]
    else:
      lines += [
        "",
        f"**mean relative MAE change** over {len(avg['tasks'])} tasks "
        f"({avg['resamples']} resamples with every task defined{skipped}), against "
        f"{reference} (paired bootstrap; negative = lower error):",
        "",
        f"| model | mean MAE ↓ | vs {reference}: relative MAE change % | vs "
        f"{reference}: absolute MAE change |",
        "|---|---|---|---|",
      ]
    for m in models:
      vs = avg["versus_reference"].get(m)
      digits = 3 if kind == "classification" else 2
      if vs is None:
        cells = ["reference", "reference"]
      elif kind == "classification":
        cells = [_cell(vs["auroc_points"], 2, "+"), _cell(vs["auroc_relative_pct"], 2, "+")]
      else:
        cells = [_cell(vs["mae_relative_pct"], 2, "+"), _cell(vs["mae_absolute"], 2, "+")]
      lines.append(f"| {m} | {_cell(avg['mean'][m], digits)} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"
