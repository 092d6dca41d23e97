"""The evaluation report: markdown (also printed), JSON, bar chart, predictions file.

`report.md` opens with the paper-format table (rows = tasks grouped by dataset, columns = models,
each cell the primary metric [bootstrap interval]) and the two cross-task averages against the
reference model (`paper`), then every metric of every task with the paired differences to the
first model.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import tempfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from clef_jax.evaluation import paper
from clef_jax.evaluation import tasks as tasks_lib
from clef_jax.evaluation.scoring import METRICS


def _fmt(value: float) -> str:
  return "n/a" if value is None or not np.isfinite(value) else f"{value:.3f}"


def format_markdown(report: Mapping[str, Any]) -> str:
  """A row per (task, metric), a column per model: `value [low, high]`; then the paired
  differences to the first model, and the classes without a test AUROC."""
  models = list(report["models"])
  proto = report["protocol"]
  conf = int(round(100 * proto["bootstrap"]["confidence"]))
  head = ["task", "metric", "n test"] + models
  rows, deltas, notes = [], [], []
  for name, task in report["tasks"].items():
    unit = f" ({task['unit']})" if task["unit"] else ""
    for metric, title, higher in METRICS[task["kind"]]:
      results = task["metrics"][metric]
      arrow = "↑" if higher else "↓"
      if metric in ("auroc", "macro_auroc", "r2"):
        unit_text = ""
      else:
        unit_text = unit
      rows.append(
        [name, f"{title}{unit_text} {arrow}", str(task["n"]["test"])]
        + [
          f"{_fmt(results[m]['value'])} [{_fmt(results[m]['low'])}, {_fmt(results[m]['high'])}]"
          for m in models
        ]
      )
      deltas.append(
        [name, f"{title}{unit_text}"]
        + [
          f"{results[m]['delta']:+.3f} [{results[m]['delta_low']:+.3f}, "
          f"{results[m]['delta_high']:+.3f}]"
          if np.isfinite(results[m].get("delta_low", np.nan))
          else "n/a"
          for m in models[1:]
        ]
      )
    if task["undefined_in_test"]:
      notes.append(
        f"- {name}: no test AUROC for {len(task['undefined_in_test'])} of "
        f"{len(task['classes'])} classes (no positives or no negatives in the test "
        f"set; left out of the macro): {', '.join(task['undefined_in_test'])}"
      )

  def table(header, body):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(r) + " |" for r in body]

  protocol = (
    "frozen backbone, linear head" if proto["mode"] == "probe" else "backbone + linear head trained"
  )
  fraction = float(proto["train"].get("label_fraction", 1.0))
  lines = [
    f"Downstream evaluation: {proto['mode']} ({protocol}), "
    f"lead {proto['lead']} (tasks on single-lead datasets use their one lead), "
    f"{proto['window']}-sample window"
    f"{', all windows averaged' if proto['windows'] == 'all' else ''}"
    f"{f', {100 * fraction:g} % of the training labels' if fraction < 1 else ''}; "
    f"point estimate [{conf} % bootstrap interval, {proto['bootstrap']['resamples']} "
    f"resamples over test records].",
    "",
  ]
  if report.get("paper"):
    lines += [
      "## Paper format",
      "",
      paper.format_markdown(
        report["paper"], group_titles=tasks_lib.DATASET_TITLES, group_order=tasks_lib.PAPER_GROUPS
      ).rstrip("\n"),
    ]
    if report.get("skipped_tasks"):
      lines += ["", "Not evaluated:"] + [f"- {why}" for why in report["skipped_tasks"].values()]
    lines += ["", "## Every metric", ""]
  lines += table(head, rows)
  if len(models) > 1:
    lines += ["", f"Difference to {models[0]} (paired bootstrap, same resamples):", ""]
    lines += table(["task", "metric"] + models[1:], deltas)
  lines += [
    "",
    "Models: "
    + "; ".join(
      f"{m}: {d['backbone']}-{d['size']} ({d['params']:,} params) from {d['source']}"
      for m, d in report["models"].items()
    ),
  ]
  split_text = "; ".join(
    f"{n}: {t['n']['train']}/{t['n']['validation']}/{t['n']['test']} ({t['split']}"
    + (f", {len(t['classes'])} classes" if t["kind"] == "multilabel" else "")
    + ")"
    for n, t in report["tasks"].items()
  )
  lines += [f"Records train/validation/test: {split_text}."]
  if notes:
    lines += [""] + notes
  return "\n".join(lines) + "\n"


def _bar_panel(ax, models, cells, title, colors, *, auroc: bool) -> None:
  """One bar per model with its interval (`cells[model]`: value, low, high)."""
  values = np.array(
    [np.nan if cells[m]["value"] is None else cells[m]["value"] for m in models], np.float64
  )
  low = np.array(
    [np.nan if cells[m]["low"] is None else cells[m]["low"] for m in models], np.float64
  )
  high = np.array(
    [np.nan if cells[m]["high"] is None else cells[m]["high"] for m in models], np.float64
  )
  err = np.nan_to_num(np.stack([values - low, high - values]).clip(min=0))
  ax.bar(
    range(len(models)),
    np.nan_to_num(values),
    yerr=err,
    capsize=4,
    color=[colors[i % len(colors)] for i in range(len(models))],
  )
  if auroc:
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_ylim(0.0, 1.0)
  else:
    ax.axhline(0.0, color="grey", lw=0.8)
  ax.set_title(title, fontsize=9)
  ax.set_xticks(range(len(models)))
  ax.set_xticklabels(models, rotation=20, ha="right", fontsize=8)


def plot_report(report: Mapping[str, Any], path: str | os.PathLike) -> None:
  """Bar chart: one panel per (task, primary metric), a bar per model with its interval; then
  the paper-format averages (mean AUROC; mean relative MAE change against the reference)."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  models = list(report["models"])
  panels = [(name, *METRICS[task["kind"]][0]) for name, task in report["tasks"].items()]
  summary = report.get("paper") or {}
  averages = [k for k in ("classification", "regression") if summary.get(k)]
  total = len(panels) + len(averages)
  cols = min(4, total)
  nrows = -(-total // cols)
  fig, axes = plt.subplots(nrows, cols, figsize=(3.2 * cols + 0.4, 3.0 * nrows), squeeze=False)
  colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
  flat = axes.ravel()
  for ax, (name, metric, title, higher) in zip(flat, panels):
    unit = report["tasks"][name]["unit"]
    label = (
      f"{name}\n{title}{' (' + unit + ')' if unit and metric in ('mae', 'rmse') else ''}"
      f" {'↑' if higher else '↓'}"
    )
    _bar_panel(
      ax,
      models,
      report["tasks"][name]["metrics"][metric],
      label,
      colors,
      auroc=metric in ("auroc", "macro_auroc"),
    )
  for ax, kind in zip(flat[len(panels) :], averages):
    avg = summary[kind]
    ref = summary["reference"]
    if kind == "classification":
      _bar_panel(
        ax, models, avg["mean"], f"mean AUROC over {len(avg['tasks'])} tasks ↑", colors, auroc=True
      )
    else:
      cells = {
        m: avg["versus_reference"][m]["mae_relative_pct"]
        if m != ref
        else {"value": 0.0, "low": 0.0, "high": 0.0}
        for m in models
      }
      _bar_panel(
        ax,
        models,
        cells,
        f"mean relative MAE change vs {ref}\nover {len(avg['tasks'])} tasks (%) ↓",
        colors,
        auroc=False,
      )
  for ax in flat[total:]:
    ax.axis("off")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def _json_safe(value: Any) -> Any:
  """NaN/inf -> None (strict JSON), recursively."""
  if isinstance(value, float):
    return value if np.isfinite(value) else None
  if isinstance(value, dict):
    return {k: _json_safe(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_json_safe(v) for v in value]
  return value


# What `write_report` writes into its directory.
REPORT_FILES = ("report.md", "report.json", "predictions.npz", "report.png")


def write_report(
  report: Mapping[str, Any], output: str | os.PathLike, *, plots: bool = True
) -> str:
  """Writes `report.md`, `report.json`, `predictions.npz` (and `report.png`) into `output`.

  `predictions.npz` holds, per task, `<task>/ids` (test record ids), `<task>/y` (targets) and
  `<task>/scores/<model>` (what the metrics were computed from), so every number in the report
  can be recomputed. The files are written into a hidden staging folder inside `output` first
  and renamed into place once all are complete: an interrupted run leaves the previous report
  (or none), never half of one.

  Returns:
    The markdown table.
  """
  out = pathlib.Path(output)
  out.mkdir(parents=True, exist_ok=True)
  stage = pathlib.Path(tempfile.mkdtemp(prefix=".report.", dir=out))
  try:
    text = format_markdown(report)
    (stage / "report.md").write_text(text)
    summary = {k: v for k, v in report.items() if k != "predictions"}
    (stage / "report.json").write_text(
      json.dumps(_json_safe(summary), indent=2, allow_nan=False) + "\n"
    )
    arrays = {}
    for task, pred in report.get("predictions", {}).items():
      arrays[f"{task}/ids"] = np.asarray(pred["ids"], dtype=str)
      arrays[f"{task}/y"] = np.asarray(pred["y"])
      for label, scores in pred["scores"].items():
        arrays[f"{task}/scores/{label}"] = np.asarray(scores)
    np.savez(stage / "predictions.npz", **arrays)
    if plots:
      plot_report(report, stage / "report.png")
    for name in REPORT_FILES:
      if (stage / name).exists():
        os.replace(stage / name, out / name)
      else:  # An older run's plot must not pass for this one's.
        (out / name).unlink(missing_ok=True)
  finally:
    shutil.rmtree(stage, ignore_errors=True)
  return text
