"""Downstream metrics (docs/method.md §F.2) with bootstrap confidence intervals.

Every metric takes optional per-record `weights`: `None` for the point estimate, or a `(B, N)`
array of bootstrap counts (how often each test record was drawn in each of B resamples), which
gives the metric of all B resamples in one vectorised call. A resample with replacement is exactly
a weighting of the records by their multiplicities, so the bootstrap never copies the data.

    counts = bootstrap_counts(n, num_resamples=1000, seed=0)    # (1000, n), deterministic
    values = macro_auroc(y, scores, weights=counts)             # (1000,)
    low, high = percentile_interval(values)

Conventions (docs/method.md §F.2, with the released code's NaN avoided):

- **AUROC** is the Mann-Whitney statistic: the probability that a random positive scores higher
  than a random negative, ties counting one half (sklearn's `roc_auc_score`). It is undefined (NaN)
  when the positives or the negatives have zero weight.
- **Macro AUROC** (multi-label, and multiclass one-vs-rest) averages the per-class AUROCs over the
  classes for which it is defined, i.e. classes with both positives and negatives. Classes absent
  from the test set are listed by `undefined_classes`, never averaged in as NaN (the released
  code's multiclass path returns NaN then). In a bootstrap resample, the average runs over the
  classes defined in that resample.
- **Regression**: MAE, RMSE and R^2 in the targets' own units.
- **Intervals**: percentile bootstrap over test records, resamples whose metric is undefined are
  dropped (and counted). With `valid=classes_present(Y)` (what the evaluation uses for its AUROC
  metrics) only the resamples that hold a positive and a negative of every class the full test
  set has are kept, and further resamples of the same stream are drawn until `num_resamples` are
  kept (at most `MAX_DRAWS` times as many drawn): on those, a macro AUROC averages exactly the
  classes its point estimate averages, so the interval is that of the same statistic (a resample
  missing a rare class would otherwise average fewer classes and pull the interval away from the
  point estimate).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

# Resamples are drawn in chunks of this many: bounds memory to ~CHUNK x N floats per metric, and
# fixes the stream of random numbers (the result depends on the seed only, not on N or B).
CHUNK = 100
# `valid_bootstrap_counts` draws at most this many resamples per resample it is asked for.
MAX_DRAWS = 100


def _weights(n: int, weights: np.ndarray | None) -> tuple[np.ndarray, bool]:
  """`(B, N)` float64 weights (B = 1 for `None`) and whether the caller wants a scalar back."""
  if weights is None:
    return np.ones((1, n)), True
  w = np.asarray(weights, np.float64)
  if w.ndim == 1:
    return w[None], True
  if w.ndim != 2 or w.shape[1] != n:
    raise ValueError(f"weights must be (N,) or (B, N) with N = {n}; got {w.shape}.")
  return w, False


def _out(values: np.ndarray, scalar: bool) -> float | np.ndarray:
  return float(values[0]) if scalar else values


# ------------------------------------------------------------------------------------------------
# AUROC.
# ------------------------------------------------------------------------------------------------
def auroc(
  y_true: np.ndarray, scores: np.ndarray, weights: np.ndarray | None = None
) -> float | np.ndarray:
  """Binary AUROC, ties counting 1/2; NaN when a class has no (weighted) records.

  Args:
    y_true: `(N,)` bool or {0, 1}.
    scores: `(N,)` finite scores, larger = more likely positive.
    weights: None, `(N,)` or `(B, N)` non-negative record weights (bootstrap counts).

  Returns:
    A float (weights None or 1-D), else `(B,)` float64.
  """
  y = np.asarray(y_true).astype(bool)
  s = np.asarray(scores, np.float64)
  if y.shape != s.shape or y.ndim != 1:
    raise ValueError(f"y_true and scores must both be (N,); got {y.shape} and {s.shape}.")
  if not np.all(np.isfinite(s)):
    raise ValueError("scores contain NaN or inf.")
  w, scalar = _weights(len(y), weights)
  order = np.argsort(s, kind="stable")
  s, y, w = s[order], y[order], w[:, order]
  if len(s) == 0:
    return _out(np.full(w.shape[0], np.nan), scalar)
  # Tied scores form one group; a positive beats every negative of the lower groups and half
  # of the negatives of its own group.
  starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
  pos = np.add.reduceat(w * y, starts, axis=1)  # (B, G) positive weight per group
  neg = np.add.reduceat(w * ~y, starts, axis=1)  # (B, G)
  below = np.cumsum(neg, axis=1) - neg  # negative weight under each group
  num = np.sum(pos * (below + 0.5 * neg), axis=1)
  den = pos.sum(axis=1) * neg.sum(axis=1)
  with np.errstate(invalid="ignore", divide="ignore"):
    values = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
  return _out(values, scalar)


def per_class_auroc(
  y_true: np.ndarray, scores: np.ndarray, weights: np.ndarray | None = None
) -> np.ndarray:
  """AUROC of each column of a multi-hot `(N, K)` target: `(K,)`, or `(B, K)` for `(B, N)`
  weights; NaN for classes without positives or negatives."""
  y = np.asarray(y_true)
  s = np.asarray(scores, np.float64)
  if y.ndim != 2 or y.shape != s.shape:
    raise ValueError(f"y_true and scores must both be (N, K); got {y.shape} and {s.shape}.")
  w, scalar = _weights(y.shape[0], weights)
  values = np.stack([auroc(y[:, k], s[:, k], w) for k in range(y.shape[1])], axis=-1)  # (B, K)
  return values[0] if scalar else values


def macro_auroc(
  y_true: np.ndarray, scores: np.ndarray, weights: np.ndarray | None = None
) -> float | np.ndarray:
  """Multi-label macro AUROC: the mean over the classes whose AUROC is defined.

  Args:
    y_true: `(N, K)` multi-hot.
    scores: `(N, K)` scores (logits or probabilities: AUROC is rank-based).
    weights: None, `(N,)` or `(B, N)`.

  Returns:
    A float, or `(B,)`; NaN only when no class is defined (e.g. an empty test set).
  """
  per_class = per_class_auroc(y_true, scores, weights)
  per_class = np.atleast_2d(per_class)  # (B, K)
  defined = np.isfinite(per_class)
  count = defined.sum(axis=1)
  with np.errstate(invalid="ignore", divide="ignore"):
    values = np.where(
      count > 0, np.where(defined, per_class, 0.0).sum(axis=1) / np.maximum(count, 1), np.nan
    )
  return float(values[0]) if weights is None or np.ndim(weights) == 1 else values


def ovr_macro_auroc(
  y_true: np.ndarray, scores: np.ndarray, weights: np.ndarray | None = None
) -> float | np.ndarray:
  """Multiclass one-vs-rest macro AUROC: `macro_auroc(onehot(y_true), scores)`.

  Args:
    y_true: `(N,)` integer classes in `[0, K)`.
    scores: `(N, K)` (softmax probabilities or logits give different per-class rankings; use
      probabilities, as sklearn's `multi_class="ovr"` does).
    weights: None, `(N,)` or `(B, N)`.
  """
  s = np.asarray(scores)
  y = np.asarray(y_true, np.int64)
  return macro_auroc(np.eye(s.shape[1], dtype=bool)[y], s, weights)


def undefined_classes(y_true: np.ndarray) -> list[int]:
  """Columns of a multi-hot `(N, K)` target that lack positives or negatives (no AUROC)."""
  y = np.asarray(y_true).astype(bool)
  return [k for k in range(y.shape[1]) if y[:, k].all() or not y[:, k].any()]


# ------------------------------------------------------------------------------------------------
# Regression.
# ------------------------------------------------------------------------------------------------
def _regression_inputs(y_true, y_pred, weights):
  y = np.asarray(y_true, np.float64)
  p = np.asarray(y_pred, np.float64)
  if y.shape != p.shape or y.ndim != 1:
    raise ValueError(f"y_true and y_pred must both be (N,); got {y.shape} and {p.shape}.")
  w, scalar = _weights(len(y), weights)
  return y, p, w, scalar


def _safe_div(num, den):
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def mae(
  y_true: np.ndarray, y_pred: np.ndarray, weights: np.ndarray | None = None
) -> float | np.ndarray:
  """Mean absolute error (weighted mean of |y - y_hat|)."""
  y, p, w, scalar = _regression_inputs(y_true, y_pred, weights)
  return _out(_safe_div(w @ np.abs(y - p), w.sum(axis=1)), scalar)


def rmse(
  y_true: np.ndarray, y_pred: np.ndarray, weights: np.ndarray | None = None
) -> float | np.ndarray:
  """Root mean squared error."""
  y, p, w, scalar = _regression_inputs(y_true, y_pred, weights)
  return _out(np.sqrt(_safe_div(w @ (y - p) ** 2, w.sum(axis=1))), scalar)


def r2(
  y_true: np.ndarray, y_pred: np.ndarray, weights: np.ndarray | None = None
) -> float | np.ndarray:
  """Coefficient of determination 1 - SS_res / SS_tot (around the weighted mean of y); NaN
  when y is constant."""
  y, p, w, scalar = _regression_inputs(y_true, y_pred, weights)
  total = w.sum(axis=1)
  mean = _safe_div(w @ y, total)  # (B,)
  ss_tot = np.sum(w * (y[None] - mean[:, None]) ** 2, axis=1)
  ss_res = w @ (y - p) ** 2
  return _out(1.0 - _safe_div(ss_res, ss_tot), scalar)


# ------------------------------------------------------------------------------------------------
# Bootstrap.
# ------------------------------------------------------------------------------------------------
def bootstrap_counts(n: int, *, num_resamples: int = 1000, seed: int = 0):
  """Yields `(b, n)` int64 resample multiplicities, `num_resamples` rows in all, in chunks.

  Row r says how often each of the n records was drawn in resample r (n draws with replacement):
  a multinomial(n, 1/n) vector. The stream depends only on `seed` and `n`: every model evaluated
  on the same test set sees the same resamples (paired comparisons).
  """
  rng = np.random.default_rng(seed)
  done = 0
  while done < num_resamples:
    b = min(CHUNK, num_resamples - done)
    yield rng.multinomial(n, np.full(n, 1.0 / n), size=b) if n else np.zeros((b, 0), np.int64)
    done += b


def classes_present(y_indicator: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
  """`valid(counts)` for `valid_bootstrap_counts` / `bootstrap`: which resamples hold a positive
  and a negative of every class that has both in the full set.

  Args:
    y_indicator: `(N, K)` class indicator (multi-hot; a multiclass or binary target as the
      one-hot of its values, `indicator`).

  Returns:
    `valid(counts)`: `(B, N)` counts -> `(B,)` bool. On the valid resamples every class whose
    AUROC the point estimate averages is defined, and no other (a class without positives or
    negatives in the full set has none in any resample).
  """
  y = np.asarray(y_indicator).astype(bool)
  y = y.reshape(len(y), -1)
  pos = y.sum(axis=0)
  both = (pos > 0) & (pos < len(y))
  positives, negatives = y[:, both].astype(np.float64), (~y[:, both]).astype(np.float64)

  def valid(counts: np.ndarray) -> np.ndarray:
    c = np.atleast_2d(np.asarray(counts, np.float64))
    return np.all(c @ positives > 0, axis=1) & np.all(c @ negatives > 0, axis=1)

  return valid


def indicator(y_true: np.ndarray) -> np.ndarray:
  """A binary / multiclass target `(N,)` as the `(N, K)` indicator of its K distinct values; a
  multi-hot `(N, K)` target as it is."""
  y = np.asarray(y_true)
  if y.ndim == 2:
    return y.astype(bool)
  return y[:, None] == np.unique(y)[None, :]


def valid_bootstrap_counts(
  n: int,
  *,
  num_resamples: int = 1000,
  seed: int = 0,
  valid: Callable[[np.ndarray], np.ndarray] | None = None,
  max_draws: int = MAX_DRAWS,
):
  """The rows of `bootstrap_counts(n, seed=seed)` for which `valid` holds, in chunks, until
  `num_resamples` rows (or `max_draws * num_resamples` drawn; then fewer). `valid=None` keeps
  every row (exactly `bootstrap_counts`). The kept rows depend only on `n`, `seed` and `valid`."""
  if valid is None:
    yield from bootstrap_counts(n, num_resamples=num_resamples, seed=seed)
    return
  need = num_resamples
  for counts in bootstrap_counts(n, num_resamples=num_resamples * max(1, max_draws), seed=seed):
    keep = counts[np.asarray(valid(counts), bool)][:need]
    if len(keep):
      yield keep
      need -= len(keep)
    if need <= 0:
      return


def percentile_interval(values: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
  """Percentile interval of the finite `values` (NaN, NaN if none)."""
  v = np.asarray(values, np.float64)
  v = v[np.isfinite(v)]
  if not v.size:
    return float("nan"), float("nan")
  tail = 100.0 * (1.0 - confidence) / 2.0
  low, high = np.percentile(v, [tail, 100.0 - tail])
  return float(low), float(high)


MetricFn = Callable[[np.ndarray | None], "float | np.ndarray"]


def bootstrap(
  metrics: Mapping[str, MetricFn],
  n: int,
  *,
  num_resamples: int = 1000,
  seed: int = 0,
  confidence: float = 0.95,
  paired_with: str | None = None,
  valid: Callable[[np.ndarray], np.ndarray] | None = None,
) -> dict[str, dict[str, float | int]]:
  """Point estimates and percentile intervals of several metrics on the same resamples.

  Args:
    metrics: name -> `fn(weights)`, where `fn(None)` is the point estimate and `fn((B, n))`
      returns `(B,)` (e.g. `lambda w: auroc(y, s, w)`). Typically one entry per model.
    n: number of test records.
    num_resamples: bootstrap resamples (1,000 in the reports).
    seed: seed of the resamples.
    confidence: interval coverage.
    paired_with: a key of `metrics`; each other entry also gets the interval of its difference
      from that one, computed on the same resamples (`delta`, `delta_low`, `delta_high`).
    valid: keep only the resamples where `valid(counts)` holds, drawing more of the same stream
      (`valid_bootstrap_counts`); e.g. `classes_present(indicator(y))` for AUROC metrics.

  Returns:
    name -> `{"value", "low", "high", "resamples"}` (+ the `delta*` keys), where `resamples` is
    the number of resamples with a defined metric.
  """
  values = {k: [] for k in metrics}
  for counts in valid_bootstrap_counts(n, num_resamples=num_resamples, seed=seed, valid=valid):
    for k, fn in metrics.items():
      values[k].append(np.asarray(fn(counts), np.float64))
  out = {}
  for k, fn in metrics.items():
    v = np.concatenate(values[k]) if values[k] else np.zeros(0)
    low, high = percentile_interval(v, confidence)
    out[k] = {
      "value": float(fn(None)),
      "low": low,
      "high": high,
      "resamples": int(np.isfinite(v).sum()),
    }
    if paired_with is not None and k != paired_with:
      base = np.concatenate(values[paired_with]) if values[paired_with] else np.zeros(0)
      d_low, d_high = percentile_interval(v - base, confidence)
      out[k].update(
        delta=out[k]["value"] - float(metrics[paired_with](None)),
        delta_low=d_low,
        delta_high=d_high,
      )
  return out
