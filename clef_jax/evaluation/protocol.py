"""The evaluation: every task of a config on every backbone, with bootstrap intervals.

Per task (docs/evaluation.md): one lead through the embed input contract, one linear head on the
pooled embedding (`heads`), test metrics (`scoring`, `clef_jax.metrics`) with percentile-bootstrap
intervals over test records (seeded resamples, the same for every model, so differences to the
first model get paired intervals).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Mapping, Sequence

import numpy as np

from clef_jax import embed, metrics
from clef_jax.evaluation import heads, models, scoring
from clef_jax.evaluation import records as records_lib
from clef_jax.evaluation import report as report_lib
from clef_jax.evaluation import tasks as tasks_lib

SPLITS = records_lib.SPLITS
MODES = ("probe", "finetune")


def _log(msg: str) -> None:
  print(msg, file=sys.stderr, flush=True)


def _check(config: Mapping[str, Any], backbones: Sequence[models.Backbone]) -> None:
  mode, head = config["mode"], config["train"]["head"]
  if mode not in MODES:
    raise ValueError(f"mode must be 'probe' or 'finetune'; got {mode!r}.")
  if head not in heads.HEADS:
    raise ValueError(f"head must be one of {', '.join(heads.HEADS)}; got {head!r}.")
  if head == "ridge" and mode == "finetune":
    raise ValueError("head=ridge is a closed-form probe of frozen embeddings; fine-tuning trains "
                     "with head=adamw.")
  labels = [b.label for b in backbones]
  if len(set(labels)) != len(labels):
    raise ValueError(f"Model labels must be unique; got {labels} (name them LABEL=PATH).")


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


def _run_task(name: str, task: Mapping[str, Any], records: records_lib.Records,
              split: np.ndarray, backbones: Sequence[models.Backbone],
              embeddings: Mapping[str, np.ndarray], config: Mapping[str, Any]
              ) -> tuple[dict[str, Any], dict[str, Any]]:
  """One task on every backbone: `(task report, test predictions)`."""
  train_cfg, boot = config["train"], config["bootstrap"]
  targets = tasks_lib.make_targets(task, records, split)
  kind = task["kind"]
  rows = {s: np.flatnonzero((split == i) & targets.valid) for i, s in enumerate(SPLITS)}
  empty = [s for s in SPLITS if not len(rows[s])]
  if empty:
    raise ValueError(f"Task {name}: no usable records in the {'/'.join(empty)} split "
                     f"({records.source}); more records or other split fractions needed.")
  y = targets.y
  y_mean, y_std = 0.0, 1.0
  y_fit = y
  if kind == "regression":           # Trained on standardised targets, as the released code.
    y_mean = float(y[rows["train"]].mean())
    y_std = float(y[rows["train"]].std()) or 1.0
    y_fit = ((y - y_mean) / y_std).astype(np.float32)
  k_out = heads.num_outputs(kind, len(targets.class_names))
  loss_fn = heads.make_loss(kind, train_cfg["regression_loss"])
  y_test = y[rows["test"]]
  task_report: dict[str, Any] = {
      "kind": kind, "label": task["label"], "data": records.source,
      "split": task["split"], "n": {s: int(len(rows[s])) for s in SPLITS},
      "unit": task["unit"], "classes": targets.class_names,
      "undefined_in_test": scoring.undefined_in(kind, y_test, targets.class_names),
      "training": {}, "metrics": {}}
  scores: dict[str, np.ndarray] = {}
  head_fns: dict[Any, heads.HeadFns] = {}      # One compile per feature size / architecture.
  fit_kwargs = dict(outputs=k_out, seed=config["seed"], head_init=train_cfg["head_init"],
                    batch_size=train_cfg["batch_size"], max_epochs=train_cfg["max_epochs"],
                    patience=train_cfg["patience"], min_delta=train_cfg["min_delta"])
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
              lambda p, x: x @ p["kernel"] + p["bias"], loss_fn,
              learning_rate=train_cfg["learning_rate"], weight_decay=train_cfg["weight_decay"])
        logits, summary = heads.probe_head(head_fns[z.shape[1]], loss_fn, z, y_fit, rows,
                                           **fit_kwargs)
    else:
      arch = (b.name, b.size)
      if arch not in head_fns:
        head_fns[arch] = heads.make_head_fns(
            heads.backbone_logits_fn(b.model), loss_fn, learning_rate=train_cfg["learning_rate"],
            weight_decay=train_cfg["weight_decay"])
      logits, summary = heads.finetune(head_fns[arch], loss_fn, b, records, y_fit, rows,
                                       **fit_kwargs)
    scores[b.label] = scoring.metric_scores(kind, logits, y_mean=y_mean, y_std=y_std)
    summary["seconds"] = round(time.monotonic() - t0, 2)
    task_report["training"][b.label] = summary
    how = (f"l2 {summary['l2']:g}" if "l2" in summary else
           f"{summary['epochs']} epochs, best {summary['best_epoch']}")
    _log(f"{name}: {b.label}: {how} (val loss {summary['best_val_loss']:.4f}, "
         f"{summary['seconds']:.0f} s)")
  for metric, _, _ in scoring.METRICS[kind]:
    task_report["metrics"][metric] = metrics.bootstrap(
        {label: scoring.metric_fn(kind, metric, y_test, s) for label, s in scores.items()},
        len(y_test), num_resamples=boot["resamples"], seed=boot["seed"],
        confidence=boot["confidence"], paired_with=backbones[0].label)
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
          "mode": config["mode"], "lead": data["lead"], "window": data["window"],
          "windows": data["windows"], "seed": config["seed"],
          "split_fractions": list(data["split_fractions"]), "split_seed": data["split_seed"],
          "train": dict(config["train"]), "bootstrap": dict(config["bootstrap"])},
      "models": {b.label: b.describe() for b in backbones},
      "tasks": {},
      # Test-set targets and scores (saved as predictions.npz, not in the JSON).
      "predictions": {},
  }
  tasks = {name: dict(t) for name, t in config["tasks"].items()}
  groups: dict[records_lib.DataKey, list[str]] = {}
  for name, task in tasks.items():
    groups.setdefault(records_lib.data_key(task, data), []).append(name)
  embed_fns: dict[tuple[str, str], Any] = {}
  for key, names in groups.items():
    start = time.monotonic()
    records = records_lib.load_records(key, sorted({tasks[n]["label"] for n in names}), data)
    _log(f"data: {records.source}: {len(records.ids)} records, {len(records.x)} windows "
         f"({len(records.skipped)} skipped, {time.monotonic() - start:.0f} s)")
    splits = {m: records_lib.assign_splits(records, mode=m, fractions=data["split_fractions"],
                                           seed=data["split_seed"])
              for m in {tasks[n]["split"] for n in names}}
    embeddings = _embed_records(backbones, records, config["embed_batch_size"], embed_fns) \
        if config["mode"] == "probe" else {}
    for name in names:
      report["tasks"][name], report["predictions"][name] = _run_task(
          name, tasks[name], records, splits[tasks[name]["split"]], backbones, embeddings, config)
  return report


def run(config: Mapping[str, Any], *, model: str | None = None, compare: Sequence[str] = (),
        output: str | os.PathLike) -> dict[str, Any]:
  """Loads the models, evaluates them with a random-init baseline, writes and prints the report.

  Args:
    config: configs/eval.py config.
    model: main model (a training workdir or `[LABEL=]PATH[@SIZE]`), or None.
    compare: further model entries.
    output: report directory.
  """
  entries = ([model] if model else []) + list(compare)
  loaded = [models.load_backbone(e) for e in entries]
  name, size = (loaded[0].name, loaded[0].size) if loaded else (config["model"]["name"],
                                                                 config["model"]["size"])
  baseline = models.random_backbone(name, size, seed=config["seed"],
                                    window=config["data"]["window"])
  report = evaluate(config, [baseline] + loaded)
  text = report_lib.write_report(report, output, plots=config["plots"])
  print(text, flush=True)
  return report
