"""A minimal linear probe: frozen embeddings -> one linear head per task, fitted on the host.

This is the demo's evaluation (pretrained vs random init on the synthetic archive's labels) and the
smallest reusable piece of the downstream protocol (spec §F.1: one linear layer on the pooled
embedding, backbone frozen). The backbone forward pass lives in `clef_jax.embed`; here everything
is numpy/scipy on `(N, D)` embeddings:

    results = probe_tasks(emb_train, labels_train, emb_test, labels_test, {"sex": 2, "rhythm": 3})
    print(format_table({"random init": r0, "pretrained": r1}))

Protocol per task: standardise features with train statistics; choose the L2 strength from
`L2_GRID` by k-fold cross-validated AUROC on the train set; refit on the whole train set; report
test AUROC (one-vs-rest, macro over the classes present) and accuracy.

Heads: "ridge" (default) is least squares on one-hot targets, closed form and deterministic,
milliseconds for thousands of records; "logistic" is multinomial logistic regression (L-BFGS), the
usual linear probe, ~100x slower.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np
import scipy.optimize
import scipy.special

from clef_jax import metrics

L2_GRID = (1e-3, 1e-2, 1e-1, 1.0)
HEADS = ("ridge", "logistic")

# (x (N, D), y (N,), num_classes, l2) -> (w (D, K), b (K,))
Fit = Callable[[np.ndarray, np.ndarray, int, float], tuple[np.ndarray, np.ndarray]]


def fit_ridge(x: np.ndarray, y: np.ndarray, num_classes: int, l2: float
              ) -> tuple[np.ndarray, np.ndarray]:
  """Least squares on one-hot targets + `l2 * N * |W|^2` (bias unpenalised), closed form."""
  n, d = x.shape
  targets = np.eye(num_classes)[np.asarray(y, np.int64)]          # (N, K)
  x1 = np.concatenate([x, np.ones((n, 1))], axis=1)               # (N, D + 1)
  reg = l2 * n * np.eye(d + 1)
  reg[d, d] = 0.0
  theta = np.linalg.solve(x1.T @ x1 + reg, x1.T @ targets)        # (D + 1, K)
  return theta[:d], theta[d]


def fit_logistic(x: np.ndarray, y: np.ndarray, num_classes: int, l2: float, *,
                 max_iter: int = 200) -> tuple[np.ndarray, np.ndarray]:
  """Multinomial logistic regression: mean cross-entropy + `l2/2 * |W|^2`, by L-BFGS."""
  n, d = x.shape
  onehot = np.eye(num_classes)[np.asarray(y, np.int64)]          # (N, K)

  def loss_grad(theta):
    w, b = theta[:d * num_classes].reshape(d, num_classes), theta[d * num_classes:]
    logits = x @ w + b                                             # (N, K)
    logp = logits - scipy.special.logsumexp(logits, axis=1, keepdims=True)
    loss = -np.sum(onehot * logp) / n + 0.5 * l2 * np.sum(w * w)
    g = (np.exp(logp) - onehot) / n                                # dL/dlogits
    return loss, np.concatenate([(x.T @ g + l2 * w).ravel(), g.sum(axis=0)])

  res = scipy.optimize.minimize(loss_grad, np.zeros(d * num_classes + num_classes), jac=True,
                                method="L-BFGS-B", options={"maxiter": max_iter})
  return res.x[:d * num_classes].reshape(d, num_classes), res.x[d * num_classes:]


FITS: dict[str, Fit] = {"ridge": fit_ridge, "logistic": fit_logistic}


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
  """Binary AUROC (ties count 1/2; `metrics.auroc`); NaN if one class only."""
  return float(metrics.auroc(np.asarray(positive, bool), scores))


def macro_auroc(scores: np.ndarray, y: np.ndarray) -> float:
  """One-vs-rest AUROC of `scores` `(N, K)` averaged over the classes present in `y`.

  Binary tasks use the margin `s1 - s0` (the usual AUROC of class 1).
  """
  y = np.asarray(y, np.int64)
  if scores.shape[1] == 2:
    return auroc(scores[:, 1] - scores[:, 0], y == 1)
  return float(metrics.ovr_macro_auroc(y, scores))


def standardize(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
  """z-scores every array with the train set's per-feature mean and std."""
  mean = train.mean(axis=0)
  std = train.std(axis=0) + 1e-6
  return [(a - mean) / std for a in (train,) + others]


def choose_l2(x: np.ndarray, y: np.ndarray, *, num_classes: int, head: str = "ridge",
              l2_grid: Sequence[float] = L2_GRID, folds: int = 5, seed: int = 0) -> float:
  """The L2 strength with the best k-fold cross-validated AUROC on `(x, y)` (first on ties)."""
  fit = FITS[head]
  fold = np.empty(len(y), np.int64)
  fold[np.random.default_rng(seed).permutation(len(y))] = np.arange(len(y)) % folds
  best_score, best_l2 = -np.inf, l2_grid[0]
  for l2 in l2_grid:
    scores = np.zeros((len(y), num_classes))
    for f in range(folds):
      tr, te = fold != f, fold == f
      x_tr, x_te = standardize(x[tr], x[te])
      w, b = fit(x_tr, y[tr], num_classes, l2)
      scores[te] = x_te @ w + b
    score = macro_auroc(scores, y)
    if score > best_score:
      best_score, best_l2 = score, l2
  return best_l2


def linear_probe(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
                 y_test: np.ndarray, *, num_classes: int, head: str = "ridge",
                 l2_grid: Sequence[float] = L2_GRID, folds: int = 5) -> dict[str, float]:
  """One task: L2 by CV on train, refit on train, metrics on test.

  Args:
    x_train, x_test: `(N, D)` embeddings.
    y_train, y_test: `(N,)` integer labels in `[0, num_classes)`.
    num_classes: K.
    head: "ridge" or "logistic".
    l2_grid: candidate L2 strengths.
    folds: cross-validation folds for choosing L2.

  Returns:
    `{"auroc", "accuracy", "l2"}`: test AUROC and accuracy, the chosen L2.
  """
  if head not in FITS:
    raise ValueError(f"Unknown probe head {head!r}; choose one of {HEADS}.")
  x_train = np.asarray(x_train, np.float64)
  y_train, y_test = np.asarray(y_train, np.int64), np.asarray(y_test, np.int64)
  l2 = choose_l2(x_train, y_train, num_classes=num_classes, head=head, l2_grid=l2_grid,
                 folds=folds)
  x_tr, x_te = standardize(x_train, np.asarray(x_test, np.float64))
  w, b = FITS[head](x_tr, y_train, num_classes, l2)
  scores = x_te @ w + b
  return {"auroc": macro_auroc(scores, y_test),
          "accuracy": float(np.mean(scores.argmax(axis=1) == y_test)), "l2": float(l2)}


def probe_tasks(emb_train: np.ndarray, labels_train: Mapping[str, np.ndarray],
                emb_test: np.ndarray, labels_test: Mapping[str, np.ndarray],
                tasks: Mapping[str, int], *, head: str = "ridge") -> dict[str, dict[str, float]]:
  """`linear_probe` for each task (name -> number of classes) on one pair of embedding sets."""
  return {task: linear_probe(emb_train, labels_train[task], emb_test, labels_test[task],
                             num_classes=k, head=head)
          for task, k in tasks.items()}


def format_table(results: Mapping[str, Mapping[str, Mapping[str, float]]],
                 metrics: Sequence[str] = ("auroc", "accuracy")) -> str:
  """Plain-text table: a row per task (+ mean), a column per (model, metric), and the change of
  the last model over the first in the first metric.

  Args:
    results: model name (e.g. "random init", "pretrained") -> `probe_tasks` output.
    metrics: metrics to show.
  """
  models = list(results)
  tasks = list(results[models[0]])
  delta = len(models) > 1

  def cells(get):
    row = [f"{get(m, k):.3f}" for m in models for k in metrics]
    if delta:
      row.append(f"{get(models[-1], metrics[0]) - get(models[0], metrics[0]):+.3f}")
    return row

  header = ["task"] + [f"{m} {k}" for m in models for k in metrics] + (["change"] if delta else [])
  rows = [[t] + cells(lambda m, k, t=t: results[m][t][k]) for t in tasks]
  mean = ["mean"] + cells(lambda m, k: float(np.nanmean([results[m][t][k] for t in tasks])))
  widths = [max(len(r[i]) for r in [header, mean] + rows) for i in range(len(header))]

  def fmt(r):
    return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                     for i, (c, w) in enumerate(zip(r, widths)))

  rule = "-" * len(fmt(header))
  return "\n".join([fmt(header), rule] + [fmt(r) for r in rows] + [rule, fmt(mean)])
