"""The paper-format averages against a direct re-derivation with explicit resampled index lists."""

import numpy as np
import pytest

from clef_jax import metrics, paper_summary


def _naive_auroc(y, s):
  """Pairwise Mann-Whitney AUROC (ties 1/2), O(n^2)."""
  pos, neg = s[y == 1], s[y == 0]
  if not len(pos) or not len(neg):
    return np.nan
  diff = pos[:, None] - neg[None, :]
  return float(np.mean((diff > 0) + 0.5 * (diff == 0)))


def _tasks(rng):
  """Two binary classification tasks and two regression tasks, three models."""
  models = ("a", "b", "ref")
  data, tasks = {}, []
  for name, n in (("cls1", 40), ("cls2", 30)):
    y = rng.integers(0, 2, n)
    scores = {m: y * (0.5 + i) + rng.normal(size=n) for i, m in enumerate(models)}
    data[name] = (y, scores)
    tasks.append(paper_summary.TaskScores(
        name=name, group="G1", kind="classification", metric="auroc", n=n,
        fn=lambda m, w, y=y, s=scores: metrics.auroc(y, s[m], w)))
  for name, n in (("reg1", 25), ("reg2", 35)):
    y = rng.normal(120, 15, n)
    preds = {m: y + rng.normal(0, 5 + 3 * i, n) for i, m in enumerate(models)}
    data[name] = (y, preds)
    tasks.append(paper_summary.TaskScores(
        name=name, group="G2", kind="regression", metric="mae", n=n,
        fn=lambda m, w, y=y, p=preds: metrics.mae(y, p[m], w)))
  return models, data, tasks


def _naive_draws(name, n, seed, num):
  """Index lists of each resample, from the same multiplicities the module draws."""
  counts = np.concatenate(list(metrics.bootstrap_counts(
      n, num_resamples=num, seed=paper_summary._seed(seed, name))))
  return [np.repeat(np.arange(n), c) for c in counts]


def test_averages_match_explicit_resampling():
  rng = np.random.default_rng(0)
  models, data, tasks = _tasks(rng)
  num, seed = 200, 7
  out = paper_summary.summarize(tasks, models=models, reference="ref", num_resamples=num,
                                seed=seed)
  idx = {t.name: _naive_draws(t.name, t.n, seed, num) for t in tasks}

  # Classification: per-resample mean of naive AUROCs over both tasks.
  def cls_means(m):
    return np.array([np.mean([_naive_auroc(data[t][0][idx[t][r]], data[t][1][m][idx[t][r]])
                              for t in ("cls1", "cls2")]) for r in range(num)])
  means = {m: cls_means(m) for m in models}
  point = {m: np.mean([_naive_auroc(data[t][0], data[t][1][m]) for t in ("cls1", "cls2")])
           for m in models}
  got = out["classification"]
  for m in models:
    assert got["mean"][m]["value"] == pytest.approx(point[m], abs=1e-12)
    lo, hi = np.percentile(means[m], [2.5, 97.5])
    assert (got["mean"][m]["low"], got["mean"][m]["high"]) == pytest.approx((lo, hi), abs=1e-12)
  d = 100 * (means["a"] - means["ref"])
  vs = got["versus_reference"]["a"]
  assert vs["auroc_points"]["value"] == pytest.approx(100 * (point["a"] - point["ref"]))
  assert (vs["auroc_points"]["low"], vs["auroc_points"]["high"]) == pytest.approx(
      tuple(np.percentile(d, [2.5, 97.5])), abs=1e-9)
  rel = 100 * (means["a"] - means["ref"]) / means["ref"]
  assert vs["auroc_relative_pct"]["low"] == pytest.approx(np.percentile(rel, 2.5), abs=1e-9)
  assert "ref" not in got["versus_reference"]

  # Regression: mean over tasks of the relative MAE change, per resample.
  def mae(t, m, r=None):
    y, p = data[t][0], data[t][1][m]
    if r is not None:
      y, p = y[idx[t][r]], p[idx[t][r]]
    return np.mean(np.abs(y - p))
  rel = np.array([np.mean([100 * (mae(t, "b", r) - mae(t, "ref", r)) / mae(t, "ref", r)
                           for t in ("reg1", "reg2")]) for r in range(num)])
  prel = np.mean([100 * (mae(t, "b") - mae(t, "ref")) / mae(t, "ref") for t in ("reg1", "reg2")])
  vs = out["regression"]["versus_reference"]["b"]["mae_relative_pct"]
  assert vs["value"] == pytest.approx(prel, abs=1e-9)
  assert (vs["low"], vs["high"]) == pytest.approx(tuple(np.percentile(rel, [2.5, 97.5])),
                                                  abs=1e-9)
  # Prediction noise grows a < b < ref, so both beat the reference and a beats b.
  a_rel = out["regression"]["versus_reference"]["a"]["mae_relative_pct"]["value"]
  assert a_rel < vs["value"] < 0


def test_undefined_resamples_are_dropped_for_every_model():
  # Two positives in 12 records: some resamples draw no positive, where AUROC is undefined.
  y = np.array([1, 1] + [0] * 10)
  s = {"m": np.linspace(0, 1, 12)[::-1], "ref": np.linspace(0, 1, 12)}
  task = paper_summary.TaskScores(name="t", group="G", kind="classification", metric="auroc",
                                  n=12, fn=lambda m, w: metrics.auroc(y, s[m], w))
  out = paper_summary.summarize([task], models=["m", "ref"], reference="ref", num_resamples=300)
  counts = np.concatenate(list(metrics.bootstrap_counts(
      12, num_resamples=300, seed=paper_summary._seed(0, "t"))))
  defined = int(np.sum((counts[:, :2].sum(1) > 0) & (counts[:, 2:].sum(1) > 0)))
  assert 0 < defined < 300
  assert out["classification"]["resamples"] == defined
  assert out["cells"]["t"]["m"]["resamples"] == defined


def test_bad_arguments_are_named():
  task = paper_summary.TaskScores(name="t", group="G", kind="ranking", metric="x", n=1,
                                  fn=lambda m, w: 0.0)
  with pytest.raises(ValueError, match="kind must be one of"):
    paper_summary.summarize([task], models=["a"], reference="a")
  with pytest.raises(ValueError, match="reference 'z'"):
    paper_summary.summarize([], models=["a"], reference="z")


def test_markdown_lists_every_task_and_both_averages():
  rng = np.random.default_rng(1)
  models, _, tasks = _tasks(rng)
  out = paper_summary.summarize(tasks, models=models, reference="ref", num_resamples=50)
  text = paper_summary.format_markdown(out)
  for t in tasks:
    assert f"| {t.group} | {t.name} |" in text
  assert "**mean AUROC** over 2 tasks" in text and "**mean MAE** over 2 tasks" in text
  assert "AUROC points" in text and "mean relative MAE change" in text
