"""The evaluation report: markdown table (also printed), JSON, bar chart, predictions file."""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any, Mapping

import numpy as np

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
      rows.append([name, f"{title}{unit_text} {arrow}", str(task["n"]["test"])] + [
          f"{_fmt(results[m]['value'])} [{_fmt(results[m]['low'])}, {_fmt(results[m]['high'])}]"
          for m in models])
      deltas.append([name, f"{title}{unit_text}"] + [
          f"{results[m]['delta']:+.3f} [{results[m]['delta_low']:+.3f}, "
          f"{results[m]['delta_high']:+.3f}]" if np.isfinite(results[m].get("delta_low", np.nan))
          else "n/a" for m in models[1:]])
    if task["undefined_in_test"]:
      notes.append(f"- {name}: no test AUROC for {len(task['undefined_in_test'])} of "
                   f"{len(task['classes'])} classes (no positives or no negatives in the test "
                   f"set; left out of the macro): {', '.join(task['undefined_in_test'])}")

  def table(header, body):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(r) + " |" for r in body]

  protocol = ("frozen backbone, linear head" if proto["mode"] == "probe"
              else "backbone + linear head trained")
  lines = [f"Downstream evaluation: {proto['mode']} ({protocol}), "
           f"lead {proto['lead']}, {proto['window']}-sample window"
           f"{', all windows averaged' if proto['windows'] == 'all' else ''}; "
           f"point estimate [{conf} % bootstrap interval, {proto['bootstrap']['resamples']} "
           f"resamples over test records].", ""]
  lines += table(head, rows)
  if len(models) > 1:
    lines += ["", f"Difference to {models[0]} (paired bootstrap, same resamples):", ""]
    lines += table(["task", "metric"] + models[1:], deltas)
  lines += ["", "Models: " + "; ".join(
      f"{m}: {d['backbone']}-{d['size']} ({d['params']:,} params) from {d['source']}"
      for m, d in report["models"].items())]
  split_text = "; ".join(
      f"{n}: {t['n']['train']}/{t['n']['validation']}/{t['n']['test']} ({t['split']}"
      + (f", {len(t['classes'])} classes" if t["kind"] == "multilabel" else "") + ")"
      for n, t in report["tasks"].items())
  lines += [f"Records train/validation/test: {split_text}."]
  if notes:
    lines += [""] + notes
  return "\n".join(lines) + "\n"


def plot_report(report: Mapping[str, Any], path: str | os.PathLike) -> None:
  """Bar chart: one panel per (task, primary metric), a bar per model with its interval."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  models = list(report["models"])
  panels = [(name, *METRICS[task["kind"]][0]) for name, task in report["tasks"].items()]
  cols = min(4, len(panels))
  nrows = -(-len(panels) // cols)
  fig, axes = plt.subplots(nrows, cols, figsize=(3.2 * cols + 0.4, 3.0 * nrows), squeeze=False)
  colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
  for ax, (name, metric, title, higher) in zip(axes.ravel(), panels):
    results = report["tasks"][name]["metrics"][metric]
    values = np.array([results[m]["value"] for m in models], np.float64)
    low = np.array([results[m]["low"] for m in models], np.float64)
    high = np.array([results[m]["high"] for m in models], np.float64)
    err = np.nan_to_num(np.stack([values - low, high - values]).clip(min=0))
    ax.bar(range(len(models)), np.nan_to_num(values), yerr=err, capsize=4,
           color=[colors[i % len(colors)] for i in range(len(models))])
    if metric in ("auroc", "macro_auroc"):
      ax.axhline(0.5, color="grey", lw=0.8, ls="--")
      ax.set_ylim(0.0, 1.0)
    unit = report["tasks"][name]["unit"]
    ax.set_title(f"{name}\n{title}{' (' + unit + ')' if unit and metric in ('mae', 'rmse') else ''}"
                 f" {'↑' if higher else '↓'}", fontsize=9)
    ax.set_xticks(range(len(models)))
    ax.set_xticklabels(models, rotation=20, ha="right", fontsize=8)
  for ax in axes.ravel()[len(panels):]:
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


def write_report(report: Mapping[str, Any], output: str | os.PathLike, *,
                 plots: bool = True) -> str:
  """Writes `report.md`, `report.json`, `predictions.npz` (and `report.png`) into `output`.

  `predictions.npz` holds, per task, `<task>/ids` (test record ids), `<task>/y` (targets) and
  `<task>/scores/<model>` (what the metrics were computed from), so every number in the report
  can be recomputed.

  Returns:
    The markdown table.
  """
  out = pathlib.Path(output)
  out.mkdir(parents=True, exist_ok=True)
  text = format_markdown(report)
  (out / "report.md").write_text(text)
  summary = {k: v for k, v in report.items() if k != "predictions"}
  (out / "report.json").write_text(json.dumps(_json_safe(summary), indent=2, allow_nan=False)
                                   + "\n")
  arrays = {}
  for task, pred in report.get("predictions", {}).items():
    arrays[f"{task}/ids"] = np.asarray(pred["ids"], dtype=str)
    arrays[f"{task}/y"] = np.asarray(pred["y"])
    for label, scores in pred["scores"].items():
      arrays[f"{task}/scores/{label}"] = np.asarray(scores)
  np.savez(out / "predictions.npz", **arrays)
  if plots:
    plot_report(report, out / "report.png")
  return text
