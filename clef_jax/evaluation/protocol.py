"""The evaluation: every task of a config on every backbone, with bootstrap intervals.

Per task (docs/evaluation.md): one lead through the embed input contract (the task's input
protocol), one linear head on the pooled embedding (`heads`), test metrics (`scoring`,
`clef_jax.metrics`) with percentile-bootstrap intervals over test records (seeded resamples per
task, the same for every model, so differences to the first model get paired intervals). Across
tasks, the paper-format summary (`paper`): each task's primary metric per model and the two
averages (mean AUROC, mean relative MAE change) against the reference model, on the same
resamples.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from clef_jax import embed, metrics
from clef_jax.data import built
from clef_jax.evaluation import heads, models, paper, scoring, task_spec
from clef_jax.evaluation import records as records_lib
from clef_jax.evaluation import report as report_lib

SPLITS = records_lib.SPLITS
MODES = ("probe", "finetune")


class TaskSkipped(ValueError):
  """A task that cannot be evaluated on the data at hand (e.g. no usable test record); the run
  goes on with the other tasks and the report lists it with this message."""


def _log(msg: str) -> None:
  print(msg, file=sys.stderr, flush=True)


def _check(config: Mapping[str, Any], backbones: Sequence[models.Backbone]) -> None:
  mode, head = config["mode"], config["train"]["head"]
  if mode not in MODES:
    raise ValueError(f"mode must be 'probe' or 'finetune'; got {mode!r}.")
  if head not in heads.HEADS:
    raise ValueError(f"head must be one of {', '.join(heads.HEADS)}; got {head!r}.")
  if head == "ridge" and mode == "finetune":
    raise ValueError(
      "head=ridge is a closed-form probe of frozen embeddings; fine-tuning trains with head=adamw."
    )
  labels = [b.label for b in backbones]
  if len(set(labels)) != len(labels):
    raise ValueError(f"Model labels must be unique; got {labels} (name them LABEL=PATH).")
  reference = config.get("reference") or labels[0]
  if reference not in labels:
    raise ValueError(f"reference={reference!r} is not one of the models: {', '.join(labels)}.")
  fraction = float(config["train"].get("label_fraction", 1.0))
  if not 0 < fraction <= 1:
    raise ValueError(f"train.label_fraction must be in (0, 1]; got {fraction}.")


def label_subset(
  train_rows: np.ndarray, y: np.ndarray, kind: str, fraction: float, seed: int
) -> np.ndarray:
  """The train rows whose labels are used when training on `fraction` of them (sorted).

  `max(1, round(fraction * n))` rows drawn without replacement by `default_rng(seed)`; for
  binary / multiclass tasks one row of every class present comes first (so a 1 % subset of a
  rare class still has it), then the rest at random.
  """
  n = len(train_rows)
  if fraction >= 1 or n == 0:
    return train_rows
  k = max(1, int(round(fraction * n)))
  rng = np.random.default_rng(seed)
  order = rng.permutation(n)
  if kind in ("binary", "multiclass"):
    labels = np.asarray(y)[train_rows][order]
    _, first = np.unique(labels, return_index=True)
    order = np.concatenate([order[first], np.delete(order, first)])
  return np.sort(train_rows[order[:k]])


def _embed_records(backbones, records, batch_size, embed_fns) -> dict[str, np.ndarray]:
  """Record embeddings per backbone label: window rows -> record means (one compile per arch)."""
  out = {}
  for b in backbones:
    arch = (b.name, b.size)
    if arch not in embed_fns:
      embed_fns[arch] = embed.make_embed_fn(b.model)
    t0 = time.monotonic()
    z = embed.embed_array(embed_fns[arch], b.params, records.x, batch_size=batch_size)
    out[b.label] = heads.record_mean(z, records.owner, len(records.ids))
    _log(f"embed: {b.label}: {out[b.label].shape} ({time.monotonic() - t0:.0f} s)")
  return out


def _run_task(
  name: str,
  task: Mapping[str, Any],
  records: records_lib.Records,
  split: np.ndarray,
  backbones: Sequence[models.Backbone],
  embeddings: Mapping[str, np.ndarray],
  config: Mapping[str, Any],
) -> tuple[dict[str, Any], dict[str, Any]]:
  """One task on every backbone: `(task report, test predictions)`."""
  train_cfg, boot = config["train"], config["bootstrap"]
  targets = task_spec.make_targets(task, records, split)
  kind = task["kind"]
  rows = {s: np.flatnonzero((split == i) & targets.valid) for i, s in enumerate(SPLITS)}
  empty = [s for s in SPLITS if not len(rows[s])]
  if empty:
    raise TaskSkipped(
      f"Task {name}: no usable records in the {'/'.join(empty)} split "
      f"({records.source}); more records or other split fractions needed."
    )
  y = targets.y
  fraction = float(train_cfg.get("label_fraction", 1.0))
  n_train_all = len(rows["train"])
  rows["train"] = label_subset(
    rows["train"], y, kind, fraction, paper.task_seed(int(train_cfg.get("label_seed", 0)), name)
  )
  y_mean, y_std = 0.0, 1.0
  y_fit = y
  if kind == "regression":  # Trained on standardised targets, as the released code.
    y_mean = float(y[rows["train"]].mean())
    y_std = float(y[rows["train"]].std()) or 1.0
    y_fit = ((y - y_mean) / y_std).astype(np.float32)
  k_out = heads.num_outputs(kind, len(targets.class_names))
  loss_fn = heads.make_loss(kind, train_cfg["regression_loss"])
  y_test = y[rows["test"]]
  task_report: dict[str, Any] = {
    "kind": kind,
    "label": task["label"],
    "data": records.source,
    "split": task["split"],
    "n": {s: int(len(rows[s])) for s in SPLITS},
    "train_available": n_train_all,
    "label_fraction": fraction,
    "group": task.get("group", ""),
    "number": int(task.get("number", 0)),
    "title": task.get("title", ""),
    "balanced": bool(task.get("balanced", False)),
    "unit": task["unit"],
    "classes": targets.class_names,
    "undefined_in_test": scoring.undefined_in(kind, y_test, targets.class_names),
    "training": {},
    "metrics": {},
  }
  scores: dict[str, np.ndarray] = {}
  head_fns: dict[Any, heads.HeadFns] = {}  # One compile per feature size / architecture.
  fit_kwargs = dict(
    outputs=k_out,
    seed=config["seed"],
    head_init=train_cfg["head_init"],
    batch_size=train_cfg["batch_size"],
    max_epochs=train_cfg["max_epochs"],
    patience=train_cfg["patience"],
    min_delta=train_cfg["min_delta"],
    balanced=bool(task.get("balanced", False)) and kind in ("binary", "multiclass"),
  )
  for b in backbones:
    t0 = time.monotonic()
    if config["mode"] == "probe":
      z = embeddings[b.label]
      if train_cfg["standardize_embeddings"]:
        z = heads.standardize(z[rows["train"]], z)[1].astype(np.float32)
      if train_cfg["head"] == "ridge":
        logits, summary = heads.ridge_head(z, y_fit, rows, kind=kind, outputs=k_out)
      else:
        if z.shape[1] not in head_fns:
          head_fns[z.shape[1]] = heads.make_head_fns(
            lambda p, x: x @ p["kernel"] + p["bias"],
            loss_fn,
            learning_rate=train_cfg["learning_rate"],
            weight_decay=train_cfg["weight_decay"],
          )
        logits, summary = heads.probe_head(
          head_fns[z.shape[1]], loss_fn, z, y_fit, rows, **fit_kwargs
        )
    else:
      arch = (b.name, b.size)
      if arch not in head_fns:
        head_fns[arch] = heads.make_head_fns(
          heads.backbone_logits_fn(b.model),
          loss_fn,
          learning_rate=train_cfg["learning_rate"],
          weight_decay=train_cfg["weight_decay"],
        )
      logits, summary = heads.finetune(
        head_fns[arch], loss_fn, b, records, y_fit, rows, **fit_kwargs
      )
    scores[b.label] = scoring.metric_scores(kind, logits, y_mean=y_mean, y_std=y_std)
    summary["seconds"] = round(time.monotonic() - t0, 2)
    task_report["training"][b.label] = summary
    how = (
      f"l2 {summary['l2']:g}"
      if "l2" in summary
      else f"{summary['epochs']} epochs, best {summary['best_epoch']}"
    )
    _log(
      f"{name}: {b.label}: {how} (val loss {summary['best_val_loss']:.4f}, "
      f"{summary['seconds']:.0f} s)"
    )
  for metric, _, _ in scoring.METRICS[kind]:
    # The task's own resample stream, shared by its metrics and by the paper summary.
    task_report["metrics"][metric] = metrics.bootstrap(
      {label: scoring.metric_fn(kind, metric, y_test, s) for label, s in scores.items()},
      len(y_test),
      num_resamples=boot["resamples"],
      seed=paper.task_seed(boot["seed"], name),
      confidence=boot["confidence"],
      paired_with=backbones[0].label,
      valid=scoring.resample_filter(kind, y_test),
    )
  predictions = {"ids": [records.ids[i] for i in rows["test"]], "y": y_test, "scores": scores}
  return task_report, predictions


def evaluate(config: Mapping[str, Any], backbones: Sequence[models.Backbone]) -> dict[str, Any]:
  """Runs every task of `config` (configs/eval.py) on every backbone.

  Args:
    config: the evaluation config (`ConfigDict` or plain dict).
    backbones: models to compare; the first is the reference of the paired differences
      (normally the random init).

  Returns:
    The report: protocol, models, and per task the split sizes, classes, per-model training
    summaries and metrics with intervals (all JSON-serialisable), plus `predictions` (test ids,
    targets and per-model scores as arrays; `report.write_report` saves them to
    `predictions.npz`).
  """
  _check(config, backbones)
  data = config["data"]
  report: dict[str, Any] = {
    "protocol": {
      "mode": config["mode"],
      "lead": data["lead"],
      "window": data["window"],
      "windows": data["windows"],
      "seed": config["seed"],
      "split_fractions": list(data["split_fractions"]),
      "split_seed": data["split_seed"],
      "train": dict(config["train"]),
      "bootstrap": dict(config["bootstrap"]),
      "reference": config.get("reference") or backbones[0].label,
    },
    "models": {b.label: b.describe() for b in backbones},
    "tasks": {},
    # Task -> why it could not be evaluated.
    "skipped_tasks": {},
    # Test-set targets and scores (saved as predictions.npz, not in the JSON).
    "predictions": {},
  }
  tasks = {name: dict(t) for name, t in config["tasks"].items()}
  groups: dict[records_lib.DataKey, list[str]] = {}
  for name, task in tasks.items():
    groups.setdefault(records_lib.data_key(task, data), []).append(name)
  _check_datasets(groups, data)
  embed_fns: dict[tuple[str, str], Any] = {}
  for key, names in groups.items():
    start = time.monotonic()
    records = records_lib.load_records(key, sorted({tasks[n]["label"] for n in names}), data)
    _log(
      f"data: {records.source}: {len(records.ids)} records, {len(records.x)} windows "
      f"({len(records.skipped)} skipped, {time.monotonic() - start:.0f} s)"
    )
    splits = {
      m: records_lib.assign_splits(
        records, mode=m, fractions=data["split_fractions"], seed=data["split_seed"]
      )
      for m in {tasks[n]["split"] for n in names}
    }
    embeddings = (
      _embed_records(backbones, records, config["embed_batch_size"], embed_fns)
      if config["mode"] == "probe"
      else {}
    )
    for name in names:
      try:
        report["tasks"][name], report["predictions"][name] = _run_task(
          name, tasks[name], records, splits[tasks[name]["split"]], backbones, embeddings, config
        )
      except TaskSkipped as e:
        report["skipped_tasks"][name] = str(e)
        _log(f"skipped: {e}")
  if not report["tasks"]:
    raise ValueError("No task could be evaluated: " + " ".join(report["skipped_tasks"].values()))
  report["tasks"] = {n: report["tasks"][n] for n in tasks if n in report["tasks"]}
  report["paper"] = paper_summary(
    report, reference=config.get("reference") or backbones[0].label, bootstrap=config["bootstrap"]
  )
  return report


def _check_datasets(
  groups: Mapping[records_lib.DataKey, Sequence[str]], data: Mapping[str, Any]
) -> None:
  """Fails before any work when a task's dataset is not built, naming every missing one."""
  missing = []
  for source, where, _, _ in groups:
    if source != "tfds":
      continue
    try:
      built.resolve_dataset(where, data["data_dir"])
    except FileNotFoundError as e:
      missing.append(str(e))
  if missing:
    raise FileNotFoundError(" ".join(dict.fromkeys(missing)))


def paper_summary(
  report: Mapping[str, Any], *, reference: str, bootstrap: Mapping[str, Any]
) -> dict[str, Any]:
  """The paper-format summary of an evaluation report (`paper.summarize`): each task's primary
  metric per model and the two cross-task averages against `reference`, from the report's test
  predictions, on each task's resample stream (the one its per-task intervals use)."""
  rows = []
  for name, t in report["tasks"].items():
    pred = report["predictions"][name]
    metric = scoring.METRICS[t["kind"]][0][0]
    fns = {m: scoring.metric_fn(t["kind"], metric, pred["y"], s) for m, s in pred["scores"].items()}
    rows.append(
      paper.TaskScores(
        name=name,
        group=t.get("group", ""),
        kind="regression" if t["kind"] == "regression" else "classification",
        metric=task_spec.PRIMARY_METRIC[t["kind"]],
        n=len(pred["y"]),
        fn=lambda m, w, fns=fns: fns[m](w),
        number=int(t.get("number", 0)),
        unit=t["unit"],
        valid=scoring.resample_filter(t["kind"], pred["y"]),
      )
    )
  return paper.summarize(
    rows,
    models=list(report["models"]),
    reference=reference,
    num_resamples=bootstrap["resamples"],
    seed=bootstrap["seed"],
    confidence=bootstrap["confidence"],
  )


def run(
  config: Mapping[str, Any],
  *,
  model: str | None = None,
  compare: Sequence[str] = (),
  output: str | os.PathLike,
) -> dict[str, Any]:
  """Loads the models, evaluates them with a random-init baseline, writes and prints the report.

  Args:
    config: configs/eval.py config.
    model: main model (a training workdir or `[LABEL=]PATH[@SIZE]`), or None.
    compare: further model entries.
    output: report directory.
  """
  entries = ([model] if model else []) + list(compare)
  loaded = [models.load_backbone(e) for e in entries]
  name, size = (
    (loaded[0].name, loaded[0].size)
    if loaded
    else (config["model"]["name"], config["model"]["size"])
  )
  baseline = models.random_backbone(
    name, size, seed=config["seed"], window=config["data"]["window"]
  )
  report = evaluate(config, [baseline] + loaded)
  text = report_lib.write_report(report, output, plots=config["plots"])
  print(text, flush=True)
  return report
