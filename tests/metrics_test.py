"""Tests for `clef_jax.metrics` against independent computations (pair counting, numpy)."""

import numpy as np
import pytest

from clef_jax import metrics


def pair_count_auroc(y, s):
  """AUROC by brute force over all positive-negative pairs, ties counting 1/2."""
  y = np.asarray(y, bool)
  pos, neg = np.asarray(s)[y], np.asarray(s)[~y]
  return np.mean((pos[:, None] > neg[None]) + 0.5 * (pos[:, None] == neg[None]))


@pytest.mark.parametrize(
  "y, s, expected",
  [
    ([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], 0.75),  # one misordered pair of four
    ([0, 1, 0, 1], [1, 1, 2, 2], 0.5),  # ties: 0.5 + 0 + 1 + 0.5 over 4
    ([1, 0, 1, 0, 1], [3, 1, 2, 2, 1], 4 / 6),  # 1 + 1 + 1 + 0.5 + 0.5 + 0 over 6
    ([1, 1, 0], [0.9, 0.8, 0.1], 1.0),
    ([1, 1, 0], [0.1, 0.2, 0.9], 0.0),
    ([0, 1, 0, 1], [5, 5, 5, 5], 0.5),  # all tied
  ],
)
def test_auroc_hand_checked(y, s, expected):
  assert metrics.auroc(np.array(y), np.array(s, float)) == pytest.approx(expected, abs=1e-12)
  assert pair_count_auroc(y, s) == pytest.approx(expected, abs=1e-12)


def test_auroc_matches_pair_counting_with_ties():
  rng = np.random.default_rng(0)
  for n in (2, 7, 50, 301):
    s = np.round(rng.standard_normal(n), 1)  # many ties
    y = rng.random(n) < 0.35
    y[:2] = [True, False]
    assert metrics.auroc(y, s) == pytest.approx(pair_count_auroc(y, s), abs=1e-12)


def test_auroc_undefined_without_both_classes():
  assert np.isnan(metrics.auroc(np.zeros(5, bool), np.arange(5.0)))
  assert np.isnan(metrics.auroc(np.ones(5, bool), np.arange(5.0)))
  with pytest.raises(ValueError, match="NaN"):
    metrics.auroc(np.array([0, 1]), np.array([0.0, np.nan]))


def test_weights_equal_repeating_the_records():
  """A bootstrap resample as counts == the resample materialised by repetition."""
  rng = np.random.default_rng(1)
  n = 40
  y = rng.random(n) < 0.4
  s = np.round(rng.standard_normal(n), 1)
  target = rng.normal(50, 10, n)
  pred = target + rng.normal(0, 5, n)
  counts = next(metrics.bootstrap_counts(n, num_resamples=5, seed=3))  # (5, n)
  assert counts.shape == (5, n) and np.all(counts.sum(axis=1) == n)
  batched = metrics.auroc(y, s, counts)
  assert batched.shape == (5,)
  for b, c in enumerate(counts):
    yr, sr = np.repeat(y, c), np.repeat(s, c)
    assert batched[b] == pytest.approx(pair_count_auroc(yr, sr), abs=1e-12)
    assert metrics.auroc(y, s, c) == pytest.approx(batched[b], abs=1e-12)  # (N,) weights
    tr, pr = np.repeat(target, c), np.repeat(pred, c)
    assert metrics.mae(target, pred, counts)[b] == pytest.approx(np.mean(np.abs(tr - pr)))
    assert metrics.rmse(target, pred, counts)[b] == pytest.approx(np.sqrt(np.mean((tr - pr) ** 2)))
    assert metrics.r2(target, pred, counts)[b] == pytest.approx(
      1 - np.sum((tr - pr) ** 2) / np.sum((tr - tr.mean()) ** 2)
    )


def test_regression_metrics_match_numpy():
  y = np.array([50.0, 60.0, 70.0, 80.0, 45.0])
  p = np.array([55.0, 58.0, 75.0, 70.0, 45.0])
  err = y - p
  assert metrics.mae(y, p) == pytest.approx(np.mean(np.abs(err)))  # 22 / 5
  assert metrics.mae(y, p) == pytest.approx(4.4)
  assert metrics.rmse(y, p) == pytest.approx(np.sqrt(np.mean(err**2)))
  assert metrics.r2(y, p) == pytest.approx(1 - np.sum(err**2) / np.sum((y - y.mean()) ** 2))
  assert metrics.r2(y, y) == 1.0
  assert metrics.r2(y, np.full(5, y.mean())) == pytest.approx(0.0)
  assert np.isnan(metrics.r2(np.ones(3), np.zeros(3)))  # constant target


def test_macro_auroc_skips_absent_classes():
  rng = np.random.default_rng(2)
  n = 60
  y = np.zeros((n, 4), np.uint8)
  y[:, 0] = rng.random(n) < 0.5
  y[:, 1] = rng.random(n) < 0.2
  y[:, 3] = 1  # class 2: no positives; 3: all
  s = rng.standard_normal((n, 4)) + y
  expected = np.mean([pair_count_auroc(y[:, k], s[:, k]) for k in (0, 1)])
  assert metrics.macro_auroc(y, s) == pytest.approx(expected, abs=1e-12)
  assert metrics.undefined_classes(y) == [2, 3]
  per_class = metrics.per_class_auroc(y, s)
  assert np.isnan(per_class[2]) and np.isnan(per_class[3]) and np.isfinite(per_class[:2]).all()
  assert np.isnan(metrics.macro_auroc(np.zeros((3, 2)), np.zeros((3, 2))))  # nothing defined


def test_ovr_macro_auroc_with_absent_class_is_not_nan():
  rng = np.random.default_rng(3)
  y = rng.integers(0, 3, 90)  # class 3 of 4 never occurs
  logits = rng.standard_normal((90, 4)) + 2 * np.eye(4)[y]
  probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
  expected = np.mean([pair_count_auroc(y == k, probs[:, k]) for k in range(3)])
  value = metrics.ovr_macro_auroc(y, probs)
  assert np.isfinite(value) and value == pytest.approx(expected, abs=1e-12)
  assert value > 0.8


def test_bootstrap_is_deterministic_and_covers_the_estimate():
  rng = np.random.default_rng(4)
  n = 200
  y = rng.random(n) < 0.3
  good = 2 * y + rng.standard_normal(n)  # AUROC ~ Phi(sqrt 2) = 0.92
  bad = rng.standard_normal(n)
  fns = {"bad": lambda w: metrics.auroc(y, bad, w), "good": lambda w: metrics.auroc(y, good, w)}
  a = metrics.bootstrap(fns, n, num_resamples=1000, seed=7, paired_with="bad")
  b = metrics.bootstrap(fns, n, num_resamples=1000, seed=7, paired_with="bad")
  c = metrics.bootstrap(fns, n, num_resamples=1000, seed=8, paired_with="bad")
  assert a == b
  assert a["good"]["low"] != c["good"]["low"]
  for r in a.values():
    assert r["resamples"] == 1000
    assert r["low"] < r["value"] < r["high"]
  assert a["good"]["value"] == pytest.approx(pair_count_auroc(y, good))
  assert a["good"]["low"] > 0.8 and a["bad"]["low"] < 0.5 < a["bad"]["high"]
  # Paired difference: computed on the same resamples, so it excludes 0 here.
  assert a["good"]["delta"] == pytest.approx(a["good"]["value"] - a["bad"]["value"])
  assert 0 < a["good"]["delta_low"] < a["good"]["delta"] < a["good"]["delta_high"]
  assert "delta" not in a["bad"]
  # Width shrinks like 1/sqrt(n): the interval of 4x the data is about half as wide.
  y4, g4 = np.tile(y, 4), np.tile(good, 4)
  wide = a["good"]["high"] - a["good"]["low"]
  narrow = metrics.bootstrap({"g": lambda w: metrics.auroc(y4, g4, w)}, 4 * n, seed=7)["g"]
  assert 0.35 < (narrow["high"] - narrow["low"]) / wide < 0.65


def test_bootstrap_drops_undefined_resamples():
  y = np.array([1] + [0] * 9, bool)  # one positive: often drawn 0 times
  s = np.arange(10.0)
  r = metrics.bootstrap({"m": lambda w: metrics.auroc(y, s, w)}, 10, num_resamples=1000, seed=0)
  assert 580 < r["m"]["resamples"] < 720  # defined iff drawn: 1 - 0.9^10 = 0.65 of them
  assert np.isfinite(r["m"]["low"]) and np.isfinite(r["m"]["high"])


def test_percentile_interval():
  v = np.r_[np.arange(101.0), np.nan]
  assert metrics.percentile_interval(v) == pytest.approx((2.5, 97.5))
  assert np.isnan(metrics.percentile_interval(np.array([np.nan]))[0])
