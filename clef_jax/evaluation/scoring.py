"""Metrics of one task: what each kind ranks or compares, and bootstrap-ready metric functions."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from clef_jax import metrics

# Primary metric first; `True` = higher is better.
METRICS: dict[str, tuple[tuple[str, str, bool], ...]] = {
  "binary": (("auroc", "AUROC", True),),
  "multiclass": (("macro_auroc", "macro AUROC (one-vs-rest)", True),),
  "multilabel": (("macro_auroc", "macro AUROC", True),),
  "regression": (("mae", "MAE", False), ("rmse", "RMSE", False), ("r2", "R²", True)),
}


def metric_scores(
  kind: str, logits: np.ndarray, *, y_mean: float = 0.0, y_std: float = 1.0
) -> np.ndarray:
  """Logits -> what the metrics rank or compare: binary logit, multi-label logits, multiclass
  softmax probabilities (as sklearn's one-vs-rest AUROC), regression in original units."""
  logits = np.asarray(logits, np.float64)
  if kind == "binary":
    return logits[:, 0]
  if kind == "multiclass":
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)
  if kind == "regression":
    return logits[:, 0] * y_std + y_mean
  return logits


def metric_fn(
  kind: str, metric: str, y: np.ndarray, scores: np.ndarray
) -> Callable[[np.ndarray | None], Any]:
  """`fn(weights)` of one metric (see `metrics.bootstrap`)."""
  fns = {
    "auroc": metrics.auroc,
    "mae": metrics.mae,
    "rmse": metrics.rmse,
    "r2": metrics.r2,
    "macro_auroc": metrics.ovr_macro_auroc if kind == "multiclass" else metrics.macro_auroc,
  }
  f = fns[metric]
  return lambda w: f(y, scores, w)


def resample_filter(kind: str, y: np.ndarray) -> Callable[[np.ndarray], np.ndarray] | None:
  """The bootstrap resamples a task keeps (`metrics.bootstrap(valid=)`): for AUROC tasks those
  holding a positive and a negative of every class its test set has (`metrics.classes_present`),
  so every resample's AUROC is the same statistic as the point estimate; None (all) for
  regression."""
  if kind == "regression":
    return None
  return metrics.classes_present(metrics.indicator(y))


def undefined_in(kind: str, y: np.ndarray, class_names: Sequence[str]) -> list[str]:
  """Names of the classes whose AUROC is undefined on `y` (no positives or no negatives)."""
  if kind == "multiclass":
    y = np.eye(len(class_names), dtype=bool)[y]
  elif kind != "multilabel":
    return []
  return [class_names[k] for k in metrics.undefined_classes(y)]
