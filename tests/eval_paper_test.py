"""The paper-format summary (`clef_jax.evaluation.paper`) against a direct re-derivation with
explicit resampled index lists, and `evaluate --config=configs/eval.py:paper` end to end on the
dummy trees of all seven datasets with every reported number recomputed from predictions.npz."""

import csv
import json
import os
import pathlib
import subprocess
import sys
import time
import warnings
import zlib

import numpy as np
import pytest

from clef_jax import metrics
from clef_jax.evaluation import paper as paper_summary

REPO = pathlib.Path(__file__).resolve().parents[1]


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
    tasks.append(
      paper_summary.TaskScores(
        name=name,
        group="G1",
        kind="classification",
        metric="auroc",
        n=n,
        fn=lambda m, w, y=y, s=scores: metrics.auroc(y, s[m], w),
      )
    )
  for name, n in (("reg1", 25), ("reg2", 35)):
    y = rng.normal(120, 15, n)
    preds = {m: y + rng.normal(0, 5 + 3 * i, n) for i, m in enumerate(models)}
    data[name] = (y, preds)
    tasks.append(
      paper_summary.TaskScores(
        name=name,
        group="G2",
        kind="regression",
        metric="mae",
        n=n,
        fn=lambda m, w, y=y, p=preds: metrics.mae(y, p[m], w),
      )
    )
  return models, data, tasks


def _naive_draws(name, n, seed, num):
  """Index lists of each resample, from the same multiplicities the module draws."""
  counts = np.concatenate(
    list(metrics.bootstrap_counts(n, num_resamples=num, seed=paper_summary.task_seed(seed, name)))
  )
  return [np.repeat(np.arange(n), c) for c in counts]


def test_averages_match_explicit_resampling():
  rng = np.random.default_rng(0)
  models, data, tasks = _tasks(rng)
  num, seed = 200, 7
  out = paper_summary.summarize(tasks, models=models, reference="ref", num_resamples=num, seed=seed)
  idx = {t.name: _naive_draws(t.name, t.n, seed, num) for t in tasks}

  # Classification: per-resample mean of naive AUROCs over both tasks.
  def cls_means(m):
    return np.array(
      [
        np.mean(
          [_naive_auroc(data[t][0][idx[t][r]], data[t][1][m][idx[t][r]]) for t in ("cls1", "cls2")]
        )
        for r in range(num)
      ]
    )

  means = {m: cls_means(m) for m in models}
  point = {
    m: np.mean([_naive_auroc(data[t][0], data[t][1][m]) for t in ("cls1", "cls2")]) for m in models
  }
  got = out["classification"]
  for m in models:
    assert got["mean"][m]["value"] == pytest.approx(point[m], abs=1e-12)
    lo, hi = np.percentile(means[m], [2.5, 97.5])
    assert (got["mean"][m]["low"], got["mean"][m]["high"]) == pytest.approx((lo, hi), abs=1e-12)
  d = 100 * (means["a"] - means["ref"])
  vs = got["versus_reference"]["a"]
  assert vs["auroc_points"]["value"] == pytest.approx(100 * (point["a"] - point["ref"]))
  assert (vs["auroc_points"]["low"], vs["auroc_points"]["high"]) == pytest.approx(
    tuple(np.percentile(d, [2.5, 97.5])), abs=1e-9
  )
  rel = 100 * (means["a"] - means["ref"]) / means["ref"]
  assert vs["auroc_relative_pct"]["low"] == pytest.approx(np.percentile(rel, 2.5), abs=1e-9)
  assert "ref" not in got["versus_reference"]

  # Regression: mean over tasks of the relative MAE change, per resample.
  def mae(t, m, r=None):
    y, p = data[t][0], data[t][1][m]
    if r is not None:
      y, p = y[idx[t][r]], p[idx[t][r]]
    return np.mean(np.abs(y - p))

  rel = np.array(
    [
      np.mean(
        [100 * (mae(t, "b", r) - mae(t, "ref", r)) / mae(t, "ref", r) for t in ("reg1", "reg2")]
      )
      for r in range(num)
    ]
  )
  prel = np.mean([100 * (mae(t, "b") - mae(t, "ref")) / mae(t, "ref") for t in ("reg1", "reg2")])
  vs = out["regression"]["versus_reference"]["b"]["mae_relative_pct"]
  assert vs["value"] == pytest.approx(prel, abs=1e-9)
  assert (vs["low"], vs["high"]) == pytest.approx(tuple(np.percentile(rel, [2.5, 97.5])), abs=1e-9)
  # Prediction noise grows a < b < ref, so both beat the reference and a beats b.
  a_rel = out["regression"]["versus_reference"]["a"]["mae_relative_pct"]["value"]
  assert a_rel < vs["value"] < 0


def _auroc_task(name, y, scores):
  """One binary classification task scoring `scores[model]` against `y` by AUROC."""
  return paper_summary.TaskScores(
    name=name,
    group="G",
    kind="classification",
    metric="auroc",
    n=len(y),
    fn=lambda m, w: metrics.auroc(y, scores[m], w),
  )


def test_a_reference_auroc_of_zero_leaves_its_resamples_out_of_the_relative_change():
  """Where the reference's mean AUROC is 0 in a resample, the relative change is undefined: the
  interval is that of the other resamples, and nothing warns (the demo's 4 test records do this)."""
  y = np.array([0, 0, 1, 1, 0, 1])
  scores = {"a": np.array([0.1, 0.2, 0.9, 0.8, 0.3, 0.4]), "ref": -y + 0.01 * np.arange(6)}
  scores["ref"][5] = 5.0  # ref ranks every positive below every negative except record 5
  task = _auroc_task("t", y, scores)
  num, seed = 300, 3
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    out = paper_summary.summarize(
      [task], models=("a", "ref"), reference="ref", num_resamples=num, seed=seed
    )
  rows = [
    (_naive_auroc(y[i], scores["a"][i]), _naive_auroc(y[i], scores["ref"][i]))
    for i in _naive_draws("t", 6, seed, num)
  ]
  a, ref = np.array([r for r in rows if np.isfinite(r).all()]).T
  assert np.sum(ref == 0) > 0 and np.sum(ref > 0) > 0  # both kinds of resample occur
  kept = ref > 0
  rel = 100 * (a[kept] - ref[kept]) / ref[kept]
  vs = out["classification"]["versus_reference"]["a"]["auroc_relative_pct"]
  assert vs["resamples"] == kept.sum()
  assert (vs["low"], vs["high"]) == pytest.approx(tuple(np.percentile(rel, [2.5, 97.5])), abs=1e-9)


def test_undefined_resamples_are_dropped_for_every_model():
  # Two positives in 12 records: some resamples draw no positive, where AUROC is undefined.
  y = np.array([1, 1] + [0] * 10)
  s = {"m": np.linspace(0, 1, 12)[::-1], "ref": np.linspace(0, 1, 12)}
  task = _auroc_task("t", y, s)
  out = paper_summary.summarize([task], models=["m", "ref"], reference="ref", num_resamples=300)
  counts = np.concatenate(
    list(metrics.bootstrap_counts(12, num_resamples=300, seed=paper_summary.task_seed(0, "t")))
  )
  defined = int(np.sum((counts[:, :2].sum(1) > 0) & (counts[:, 2:].sum(1) > 0)))
  assert 0 < defined < 300
  assert out["classification"]["resamples"] == defined
  assert out["cells"]["t"]["m"]["resamples"] == defined


def _naive_macro(y, s, columns):
  return float(np.mean([_naive_auroc(y[:, k], s[:, k]) for k in columns]))


def test_interval_is_that_of_the_same_statistic():
  """A macro AUROC over nine rare labels (one positive each, scored lowest: AUROC 0) and a
  perfectly separated common one (AUROC 1): 1/10 on the full set. A resample missing some rare
  labels averages fewer of them (1/9, 1/8, ...), and all nine are drawn in only ~2 % of the
  resamples, so an interval over every resample lies above the point estimate. Kept resamples
  hold every label, the same statistic, so the interval is the point; the mean over this task
  and a binary one is re-derived with explicit index lists."""
  n, rare = 40, 9
  y = np.zeros((n, rare + 1), int)
  y[np.arange(rare), np.arange(rare)] = 1  # record i < 9 is label i's positive
  y[::2, rare] = 1
  s = np.where(y == 1, -1.0, 0.0)  # rare positives score lowest
  s[:, rare] = y[:, rare]  # the common label is separated
  s = {"m": s, "ref": s + np.random.default_rng(0).normal(0, 0.01, s.shape)}
  yb = np.array([0, 1] * 15)
  sb = {
    "m": yb + np.random.default_rng(1).normal(0, 1, 30),
    "ref": np.random.default_rng(2).normal(0, 1, 30),
  }
  tasks = [
    paper_summary.TaskScores(
      name="rare",
      group="G",
      kind="classification",
      metric="macro_auroc",
      n=n,
      fn=lambda m, w: metrics.macro_auroc(y, s[m], w),
      valid=metrics.classes_present(y),
    ),
    paper_summary.TaskScores(
      name="bin",
      group="G",
      kind="classification",
      metric="auroc",
      n=30,
      fn=lambda m, w: metrics.auroc(yb, sb[m], w),
      valid=metrics.classes_present(metrics.indicator(yb)),
    ),
  ]
  num, seed = 60, 3
  out = paper_summary.summarize(
    tasks, models=["m", "ref"], reference="ref", num_resamples=num, seed=seed
  )
  point = 1 / 10
  cell = out["cells"]["rare"]["m"]
  assert cell["value"] == pytest.approx(point)
  assert cell["low"] == pytest.approx(point) and cell["high"] == pytest.approx(point)
  assert cell["resamples"] == num

  # Every resample of the plain stream: the old interval, which excludes the point estimate.
  plain = np.concatenate(
    [
      metrics.macro_auroc(y, s["m"], c)
      for c in metrics.bootstrap_counts(
        n, num_resamples=num, seed=paper_summary.task_seed(seed, "rare")
      )
    ]
  )
  assert metrics.percentile_interval(plain)[0] > point

  # Independent re-derivation: index lists from the same multinomial stream, kept when every
  # label with both classes on the full set has both in the resample, the first `num` kept.
  def kept_indices(name, n, labels):
    rng = np.random.default_rng(paper_summary.task_seed(seed, name))
    kept = []
    while len(kept) < num:
      idx = np.repeat(np.arange(n), rng.multinomial(n, np.full(n, 1 / n)))
      if all(
        0 < labels[idx, k].sum() < n for k in range(labels.shape[1]) if 0 < labels[:, k].sum() < n
      ):
        kept.append(idx)
    return kept

  yb2 = np.stack([yb == 0, yb == 1], axis=1).astype(int)
  idx = {"rare": kept_indices("rare", n, y), "bin": kept_indices("bin", 30, yb2)}
  cols = range(rare + 1)
  draws = {
    m: np.array(
      [
        (_naive_macro(y[i], s[m][i], cols) + _naive_auroc(yb[j], sb[m][j])) / 2
        for i, j in zip(idx["rare"], idx["bin"])
      ]
    )
    for m in ("m", "ref")
  }
  points = {m: (_naive_macro(y, s[m], cols) + _naive_auroc(yb, sb[m])) / 2 for m in ("m", "ref")}
  avg = out["classification"]
  assert avg["resamples"] == num and avg["left_out"] == []
  for m in ("m", "ref"):
    got = avg["mean"][m]
    assert got["value"] == pytest.approx(points[m], abs=1e-12)
    assert (got["low"], got["high"]) == pytest.approx(
      tuple(np.percentile(draws[m], [2.5, 97.5])), abs=1e-12
    )
    assert got["low"] <= got["value"] <= got["high"]
  vs = avg["versus_reference"]["m"]["auroc_points"]
  assert vs["value"] == pytest.approx(100 * (points["m"] - points["ref"]), abs=1e-9)
  assert (vs["low"], vs["high"]) == pytest.approx(
    tuple(np.percentile(100 * (draws["m"] - draws["ref"]), [2.5, 97.5])), abs=1e-9
  )


def test_bad_arguments_are_named():
  task = paper_summary.TaskScores(
    name="t", group="G", kind="ranking", metric="x", n=1, fn=lambda m, w: 0.0
  )
  with pytest.raises(ValueError, match="kind must be one of"):
    paper_summary.summarize([task], models=["a"], reference="a")
  with pytest.raises(ValueError, match="reference 'z'"):
    paper_summary.summarize([], models=["a"], reference="z")


def test_markdown_lists_every_task_and_both_averages():
  rng = np.random.default_rng(1)
  models, _, tasks = _tasks(rng)
  out = paper_summary.summarize(tasks, models=models, reference="ref", num_resamples=50)
  text = paper_summary.format_markdown(out, group_order=("G2",))
  lines = text.splitlines()
  rows = [l for l in lines if l.startswith(("| G1 |", "| G2 |"))]
  # Grouped by dataset (G2 first as asked), one row per task, one cell per model.
  assert [r.split(" | ")[2] for r in rows] == ["reg1", "reg2", "cls1", "cls2"]
  assert all(r.count(" [") == len(models) for r in rows)
  assert "**mean AUROC** over 2 tasks" in text and "**mean relative MAE change** over 2" in text
  assert "vs ref: AUROC points" in text and "vs ref: relative MAE change %" in text


def test_tasks_undefined_for_a_model_are_left_out_of_the_average():
  y = np.array([0, 1, 0, 1, 1, 0])
  ok = paper_summary.TaskScores(
    name="ok",
    group="G",
    kind="classification",
    metric="auroc",
    n=6,
    fn=lambda m, w: metrics.auroc(y, np.arange(6.0), w),
  )
  # All positives: no AUROC for anyone.
  bad = paper_summary.TaskScores(
    name="bad",
    group="G",
    kind="classification",
    metric="auroc",
    n=6,
    fn=lambda m, w: metrics.auroc(np.ones(6), np.arange(6.0), w),
  )
  out = paper_summary.summarize([ok, bad], models=["a", "ref"], reference="ref", num_resamples=50)
  assert out["classification"]["tasks"] == ["ok"]
  assert out["classification"]["left_out"] == ["bad"]
  assert out["classification"]["mean"]["a"]["value"] == pytest.approx(
    metrics.auroc(y, np.arange(6.0))
  )
  assert "left out, undefined for some model: bad" in paper_summary.format_markdown(out)


# ------------------------------------------------------------------------------------------------
# `evaluate --config=configs/eval.py:paper` end to end on the dummy trees of all seven datasets.
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def paper_data(tmp_path_factory):
  """Every builder's dummy tree with the records that make all 18 tasks runnable, built."""
  pytest.importorskip("tensorflow_datasets")
  from clef_jax.evaluation import paper_dummy

  root = tmp_path_factory.mktemp("paper_data")
  paper_dummy.write_and_build(root)
  return root


def test_paper_dummy_keeps_what_is_there(tmp_path):
  from clef_jax.evaluation import paper_dummy

  (tmp_path / "raw" / "mc_med").mkdir(parents=True)
  (tmp_path / "raw" / "mc_med" / "visits.csv").write_text("mine")
  with pytest.raises(FileExistsError, match="mc_med already written; pass overwrite"):
    paper_dummy.write_and_build(tmp_path)
  assert (tmp_path / "raw" / "mc_med" / "visits.csv").read_text() == "mine"
  assert not (tmp_path / "raw" / "ptbxl").exists() and not (tmp_path / "tfds").exists()


def _pair_auroc(y, s):
  """Mann-Whitney AUROC by counting pairs (ties 1/2); NaN without both classes."""
  y = np.asarray(y).astype(bool)
  pos, neg = s[y], s[~y]
  if not len(pos) or not len(neg):
    return np.nan
  return float(np.mean((pos[:, None] > neg[None]) + 0.5 * (pos[:, None] == neg[None])))


def _primary(kind, y, s):
  """The paper's metric of one task, re-derived: AUROC / macro over defined columns / MAE."""
  if kind == "binary":
    return _pair_auroc(y, s)
  if kind == "regression":
    return float(np.mean(np.abs(y - s)))
  if kind == "multiclass":
    y = np.eye(s.shape[1], dtype=bool)[y]
  per_class = [_pair_auroc(y[:, k], s[:, k]) for k in range(y.shape[1])]
  defined = [a for a in per_class if np.isfinite(a)]
  return float(np.mean(defined)) if defined else np.nan


def _secondary(metric, y, s):
  err = y - s
  if metric == "rmse":
    return float(np.sqrt(np.mean(err**2)))
  ss_tot = np.sum((y - y.mean()) ** 2)
  return float(1 - np.sum(err**2) / ss_tot) if ss_tot > 0 else np.nan


def _close(got, want):
  if want is None or not np.isfinite(want):
    assert got is None, (got, want)
  else:
    assert got == pytest.approx(want, rel=1e-9, abs=1e-9)


def _interval(draws, confidence):
  finite = draws[np.isfinite(draws)]
  if not finite.size:
    return None, None, 0
  tail = 50 * (1 - confidence)
  low, high = np.percentile(finite, [tail, 100 - tail])
  return low, high, finite.size


def _check_interval(cell, point, draws, confidence):
  low, high, count = _interval(np.asarray(draws, np.float64), confidence)
  _close(cell["value"], point)
  _close(cell["low"], low)
  _close(cell["high"], high)
  assert cell["resamples"] == count


def _recompute_everything(report, pred):
  """Every number of report.json from predictions.npz: per-task metrics with their intervals and
  paired differences, the paper cells, and both averages with their paired intervals."""
  models = list(report["models"])
  boot = report["protocol"]["bootstrap"]
  num, conf = boot["resamples"], boot["confidence"]
  points, draws = {}, {}
  for name, task in report["tasks"].items():
    kind = task["kind"]
    y = pred[f"{name}/y"]
    n = len(y)
    seed = (boot["seed"] * 1_000_003 + zlib.crc32(name.encode())) % 2**32
    rng = np.random.default_rng(seed)
    if kind == "regression":  # Every resample.
      counts = rng.multinomial(n, np.full(n, 1.0 / n), size=num)
      index = [np.repeat(np.arange(n), c) for c in counts]
    else:  # Those holding both classes of every defined class.
      onehot = y if kind == "multilabel" else (y[:, None] == np.unique(y)[None])
      defined = [k for k in range(onehot.shape[1]) if 0 < onehot[:, k].sum() < n]
      index = []
      for _ in range(100 * num):
        i = np.repeat(np.arange(n), rng.multinomial(n, np.full(n, 1.0 / n)))
        if all(0 < onehot[i, k].sum() < len(i) for k in defined):
          index.append(i)
          if len(index) == num:
            break
    names = (
      ["mae", "rmse", "r2"]
      if kind == "regression"
      else ["auroc" if kind == "binary" else "macro_auroc"]
    )
    for metric in names:
      fn = (
        (lambda a, b, kind=kind: _primary(kind, a, b))
        if metric in ("auroc", "macro_auroc", "mae")
        else (lambda a, b, metric=metric: _secondary(metric, a, b))
      )
      value, sample = {}, {}
      for m in models:
        s = pred[f"{name}/scores/{m}"]
        value[m] = fn(y, s)
        sample[m] = np.array([fn(y[i], s[i]) for i in index])
        cell = task["metrics"][metric][m]
        _check_interval(cell, value[m], sample[m], conf)
        if m != models[0]:
          _close(cell["delta"], value[m] - value[models[0]])
          low, high, _ = _interval(sample[m] - sample[models[0]], conf)
          _close(cell["delta_low"], low)
          _close(cell["delta_high"], high)
      if metric in ("auroc", "macro_auroc", "mae"):
        points[name], draws[name] = value, sample
        for m in models:
          _check_interval(report["paper"]["cells"][name][m], value[m], sample[m], conf)
  ref = report["paper"]["reference"]
  for kind, summary_kind in (("classification", "classification"), ("regression", "regression")):
    of_kind = [
      n for n, t in report["tasks"].items() if (t["kind"] == "regression") == (kind == "regression")
    ]
    chosen = [n for n in of_kind if all(np.isfinite(points[n][m]) for m in models)]
    avg = report["paper"].get(summary_kind)
    if not chosen:
      assert avg is None
      continue
    assert avg["tasks"] == chosen and avg["left_out"] == [n for n in of_kind if n not in chosen]
    k = min(len(draws[n][models[0]]) for n in chosen)  # The k-th kept resample of each.
    d = {m: np.array([draws[n][m][:k] for n in chosen]) for m in models}  # (tasks, resamples)
    keep = np.all([np.isfinite(d[m]).all(axis=0) for m in models], axis=0)
    assert avg["resamples"] == keep.sum()
    d = {m: v[:, keep] for m, v in d.items()}
    p = {m: np.array([points[n][m] for n in chosen]) for m in models}
    for m in models:
      _check_interval(avg["mean"][m], p[m].mean(), d[m].mean(axis=0), conf)
      if m == ref:
        assert m not in avg["versus_reference"]
        continue
      vs = avg["versus_reference"][m]
      if kind == "classification":
        _check_interval(
          vs["auroc_points"],
          100 * (p[m].mean() - p[ref].mean()),
          100 * (d[m].mean(axis=0) - d[ref].mean(axis=0)),
          conf,
        )
        _check_interval(
          vs["auroc_relative_pct"],
          100 * (p[m].mean() - p[ref].mean()) / p[ref].mean(),
          100 * (d[m].mean(axis=0) - d[ref].mean(axis=0)) / d[ref].mean(axis=0),
          conf,
        )
      else:
        _check_interval(
          vs["mae_relative_pct"],
          np.mean(100 * (p[m] - p[ref]) / p[ref]),
          np.mean(100 * (d[m] - d[ref]) / d[ref], axis=0),
          conf,
        )
        _check_interval(
          vs["mae_absolute"], np.mean(p[m] - p[ref]), np.mean(d[m] - d[ref], axis=0), conf
        )


@pytest.mark.slow
def test_paper_config_end_to_end_on_every_dummy_dataset(paper_data, tmp_path):
  """The one command of the paper's table, on the dummy data of the seven datasets: random init
  plus two PyTorch weight files, every task, every number recomputed from predictions.npz."""
  from clef_jax.evaluation import models as models_lib
  from clef_jax.evaluation import tasks
  from clef_jax.export import torch_files

  weights = []
  for seed in (1, 2):
    b = models_lib.random_backbone("net1d", "small", seed=seed, window=5000)
    path = tmp_path / f"net1d_small_seed{seed}.ckpt"
    torch_files.save_torch(b.params, path, size="small")
    weights.append(f"seed{seed}={path}")
  out = tmp_path / "report"
  env = dict(
    os.environ,
    JAX_PLATFORMS="cpu",
    JAX_DISABLE_MOST_OPTIMIZATIONS="1",
    PYTHONPATH=os.fspath(REPO),
    XLA_FLAGS="--xla_force_host_platform_device_count=1",
  )
  start = time.monotonic()
  proc = subprocess.run(
    [
      sys.executable,
      "-m",
      "clef_jax.evaluate",
      f"--config=configs/eval.py:paper,data_dir={paper_data / 'tfds'},epochs=2,resamples=100,"
      "embed_batch=16",
      f"--torch_weights={weights[0]}",
      f"--compare={weights[1]}",
      f"--output={out}",
    ],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=900,
  )
  seconds = time.monotonic() - start
  print(f"evaluate paper on the dummy data: {seconds:.0f} s")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert {p.name for p in out.iterdir()} == {
    "report.md",
    "report.json",
    "report.png",
    "predictions.npz",
  }
  report = json.loads((out / "report.json").read_text())
  assert list(report["models"]) == ["random init", "seed1", "seed2"]
  assert report["paper"]["reference"] == "random init"
  # All 18 paper tasks ran, each with a number and an interval in every cell.
  ran = set(report["tasks"])
  assert ran == set(tasks.PAPER_TASKS) and not report["skipped_tasks"], report["skipped_tasks"]
  for name in ran:
    t = report["tasks"][name]
    assert t["number"] == tasks.TASKS[name].number
    assert min(t["n"].values()) >= 2, (name, t["n"])
    for m in report["models"]:
      cell = report["paper"]["cells"][name][m]
      assert np.isfinite([cell["value"], cell["low"], cell["high"]]).all(), (name, m, cell)
  assert report["paper"]["classification"]["left_out"] == []
  assert len(report["paper"]["classification"]["tasks"]) == 13
  assert len(report["paper"]["regression"]["tasks"]) == 5
  # The lead each task read: config lead I for the 12-lead sets, the builders' column otherwise.
  assert report["protocol"]["lead"] == "I"
  _recompute_everything(report, np.load(out / "predictions.npz"))
  # The tables: one row per evaluated task grouped by dataset, then both averages.
  text = (out / "report.md").read_text()
  assert text.strip() in proc.stdout
  rows = [
    line
    for line in text.split("## Every metric")[0].splitlines()
    if line.startswith("| ") and line.split(" | ")[2] in ran
  ]
  assert [r.split(" | ")[2] for r in rows] == [
    n for g in tasks.PAPER_GROUPS for n in tasks.GROUPS[g] if n in ran
  ]
  assert "**mean AUROC** over 13 tasks" in text
  assert (
    "**mean relative MAE change** over 5 tasks" in text
    and "n/a" not in text.split("## Every metric")[0]
  )
  # Test targets of a regression task are the visit table's values (read with csv).
  with open(paper_data / "raw" / "mc_med" / "visits.csv", newline="") as f:
    sbp = {row["CSN"]: float(row["Triage_SBP"]) for row in csv.DictReader(f) if row["Triage_SBP"]}
  pred = np.load(out / "predictions.npz")
  assert [sbp[i] for i in pred["mc_med_sbp/ids"]] == list(pred["mc_med_sbp/y"])
