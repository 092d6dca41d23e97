"""A minimal linear probe: frozen embeddings -> L2-regularised logistic regression per task.

This is the demo's evaluation (pretrained vs random init on the synthetic archive's labels) and the
smallest reusable piece of the downstream protocol (spec §F.1: one linear head on the pooled
embedding, backbone frozen). Everything is numpy + scipy L-BFGS on embeddings that fit in memory;
the backbone forward pass lives in `clef_jax.embed`.

    emb = {"train": (N, D), "validation": (N', D), "test": (N'', D)}
    labels = {"train": {"sex": (N,), ...}, ...}
    results = probe_tasks(emb, labels, {"sex": 2, "rhythm": 3})
    print(format_table({"random init": r0, "pretrained": r1}))

The L2 strength is chosen on `validation` from a small grid and the head is refit on `train`;
reported numbers are on `test`. AUROC is one-vs-rest, macro-averaged over the classes present in
the test labels (binary tasks: the usual AUROC of class 1).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import scipy.optimize
import scipy.special
import scipy.stats

L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)


def _standardize(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
  """z-scores every array with the train split's per-feature mean and std."""
  mean = train.mean(axis=0)
  std = train.std(axis=0) + 1e-6
  return [(a - mean) / std for a in (train,) + others]


def fit_logistic(x: np.ndarray, y: np.ndarray, *, num_classes: int, l2: float = 1e-2,
                 max_iter: int = 500) -> tuple[np.ndarray, np.ndarray]:
  """Multinomial logistic regression, mean cross-entropy + `l2/2 * |W|^2`, fitted by L-BFGS.

  Args:
    x: `(N, D)` features (standardise them first).
    y: `(N,)` integer labels in `[0, num_classes)`.
    num_classes: K (>= 2).
    l2: weight penalty (the bias is not penalised).
    max_iter: L-BFGS iterations.

  Returns:
    `(w (D, K), b (K,))`, float64.
  """
  n, d = x.shape
  onehot = np.eye(num_classes)[np.asarray(y, np.int64)]          # (N, K)

  def loss_grad(theta):
    w, b = theta[:d * num_classes].reshape(d, num_classes), theta[d * num_classes:]
    logits = x @ w + b                                             # (N, K)
    logp = logits - scipy.special.logsumexp(logits, axis=1, keepdims=True)
    loss = -np.sum(onehot * logp) / n + 0.5 * l2 * np.sum(w * w)
    g = (np.exp(logp) - onehot) / n                                # dL/dlogits
    return loss, np.concatenate([(x.T @ g + l2 * w).ravel(), g.sum(axis=0)])

  theta0 = np.zeros(d * num_classes + num_classes)
  res = scipy.optimize.minimize(loss_grad, theta0, jac=True, method="L-BFGS-B",
                                options={"maxiter": max_iter})
  return res.x[:d * num_classes].reshape(d, num_classes), res.x[d * num_classes:]


def predict_proba(w: np.ndarray, b: np.ndarray, x: np.ndarray) -> np.ndarray:
  """`(N, K)` class probabilities."""
  return scipy.special.softmax(x @ w + b, axis=1)


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
  """Binary AUROC by the rank-sum formula (ties get average ranks); NaN if one class only."""
  positive = np.asarray(positive, bool)
  n_pos, n_neg = positive.sum(), (~positive).sum()
  if n_pos == 0 or n_neg == 0:
    return float("nan")
  ranks = scipy.stats.rankdata(scores)
  return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def macro_auroc(probs: np.ndarray, y: np.ndarray) -> float:
  """One-vs-rest AUROC averaged over the classes present in `y` (binary: AUROC of class 1)."""
  y = np.asarray(y, np.int64)
  if probs.shape[1] == 2:
    return auroc(probs[:, 1], y == 1)
  values = [auroc(probs[:, k], y == k) for k in np.unique(y)]
  values = [v for v in values if np.isfinite(v)]
  return float(np.mean(values)) if values else float("nan")


def linear_probe(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
                 x_test: np.ndarray, y_test: np.ndarray, *, num_classes: int,
                 l2_grid: Sequence[float] = L2_GRID) -> dict[str, float]:
  """Fits one task's head, choosing L2 on validation AUROC; returns test metrics.

  Returns:
    `{"auroc", "accuracy", "l2"}` (test AUROC / accuracy, the chosen penalty).
  """
  x_train, x_val, x_test = _standardize(x_train, x_val, x_test)
  best = None
  for l2 in l2_grid:
    w, b = fit_logistic(x_train, y_train, num_classes=num_classes, l2=l2)
    score = macro_auroc(predict_proba(w, b, x_val), y_val)
    if best is None or score > best[0]:
      best = (score, l2, w, b)
  _, l2, w, b = best
  probs = predict_proba(w, b, x_test)
  return {"auroc": macro_auroc(probs, y_test),
          "accuracy": float(np.mean(probs.argmax(axis=1) == y_test)), "l2": l2}


def probe_tasks(embeddings: Mapping[str, np.ndarray],
                labels: Mapping[str, Mapping[str, np.ndarray]],
                tasks: Mapping[str, int]) -> dict[str, dict[str, float]]:
  """Linear probe on each task.

  Args:
    embeddings: split name -> `(N, D)`; needs "train", "validation" and "test".
    labels: split name -> task -> `(N,)` integer labels.
    tasks: task name -> number of classes.

  Returns:
    task -> `linear_probe` metrics.
  """
  e = {s: np.asarray(embeddings[s], np.float64) for s in ("train", "validation", "test")}
  return {task: linear_probe(e["train"], labels["train"][task], e["validation"],
                             labels["validation"][task], e["test"], labels["test"][task],
                             num_classes=k)
          for task, k in tasks.items()}


def format_table(results: Mapping[str, Mapping[str, Mapping[str, float]]],
                 metrics: Sequence[str] = ("auroc", "accuracy")) -> str:
  """A plain-text table: one row per task, one column per (model, metric), and the delta of the
  last model over the first in the first metric.

  Args:
    results: model name (e.g. "random init", "pretrained") -> `probe_tasks` output.
    metrics: which metrics to show.
  """
  models = list(results)
  tasks = list(results[models[0]])
  header = ["task"] + [f"{m} {k}" for m in models for k in metrics]
  if len(models) > 1:
    header.append(f"delta {metrics[0]}")
  rows = []
  for task in tasks:
    row = [task] + [f"{results[m][task][k]:.3f}" for m in models for k in metrics]
    if len(models) > 1:
      row.append(f"{results[models[-1]][task][metrics[0]] - results[models[0]][task][metrics[0]]:+.3f}")
    rows.append(row)
  if len(tasks) > 1:
    row = ["mean"] + [f"{np.nanmean([results[m][t][k] for t in tasks]):.3f}"
                      for m in models for k in metrics]
    if len(models) > 1:
      row.append(f"{np.nanmean([results[models[-1]][t][metrics[0]] - results[models[0]][t][metrics[0]] for t in tasks]):+.3f}")
    rows.append(row)
  widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
  fmt = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)  # noqa: E731
                            for i, (c, w) in enumerate(zip(r, widths)))
  line = "-" * len(fmt(header))
  return "\n".join([fmt(header), line] + [fmt(r) for r in rows[:len(tasks)]]
                   + ([line, fmt(rows[-1])] if len(tasks) > 1 else []))
