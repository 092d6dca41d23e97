"""Tests for `clef_jax.evaluation` and `configs/eval.py`: splits, targets, heads, CLI, end to end.

The end-to-end tests share one "pretrained" model: `configs/small.py:tiny` trained for 8 steps
in-process (~30 s on 2 CPU cores), then evaluated on the real Challenge records in
`../shared/data/cinc2021` (CLI, probe; in-process, fine-tuning) and on a synthetic demo archive.
"""

import fcntl
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from clef_jax import metrics
from clef_jax.configs import eval as eval_config
from clef_jax.data import built
from clef_jax.evaluation import heads, models, protocol, records, scoring, task_spec, tasks
from clef_jax.evaluation import report as report_lib

REPO = pathlib.Path(__file__).resolve().parents[1]


def pair_count_auroc(y, s):
  y = np.asarray(y, bool)
  pos, neg = np.asarray(s)[y], np.asarray(s)[~y]
  return np.mean((pos[:, None] > neg[None]) + 0.5 * (pos[:, None] == neg[None]))


# ------------------------------------------------------------------------------------------------
# Splits, config, targets.
# ------------------------------------------------------------------------------------------------
def test_patient_split_has_no_overlap_and_is_seeded():
  rng = np.random.default_rng(0)
  patients = [f"p{i}" for i in rng.integers(0, 300, 1000)]  # ~1-8 records per patient
  split = records.patient_split(patients, fractions=(0.7, 0.15, 0.15), seed=3)
  sets = [{p for p, s in zip(patients, split) if s == k} for k in range(3)]
  assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
  assert sum(map(len, sets)) == len(set(patients))
  n = len(set(patients))
  assert [len(s) for s in sets] == [n - round(0.15 * n) * 2, round(0.15 * n), round(0.15 * n)]
  np.testing.assert_array_equal(split, records.patient_split(patients, seed=3))
  # The split depends on the set of ids, not on the record order.
  order = rng.permutation(len(patients))
  shuffled = records.patient_split([patients[i] for i in order], seed=3)
  np.testing.assert_array_equal(shuffled, split[order])
  assert not np.array_equal(records.patient_split(patients, seed=4), split)
  # Tiny sets still get one patient per split.
  assert sorted(records.patient_split(["a", "b", "c"], seed=0)) == [0, 1, 2]


def test_config_tasks_and_options():
  config = eval_config.get_config(
    "sex+age,finetune,window=256,split=0.5/0.2/0.3,lead=II,"
    "epochs=3,resamples=50,head_init=zeros,embed_batch=16"
  )
  assert list(config.tasks) == ["sex", "age"]  # in the order asked for
  assert config.embed_batch_size == 16
  assert config.mode == "finetune" and config.data.window == 256 and config.data.lead == "II"
  assert config.data.split_fractions == (0.5, 0.2, 0.3)
  assert config.train.max_epochs == 3 and config.bootstrap.resamples == 50
  assert config.train.head_init == "zeros"
  head = heads.init_head(4, 2, 0, init=config.train.head_init)
  assert not np.any(head["kernel"]) and not np.any(head["bias"])
  head = heads.init_head(4, 2, 0)  # nn.Linear: U(+-1/sqrt(4))
  assert np.all(np.abs(head["kernel"]) <= 0.5) and head["kernel"].std() > 0.1
  default = eval_config.get_config("ptbxl")
  assert list(default.tasks) == [
    f"ptbxl_{t}" for t in ("diagnostic", "subdiagnostic", "superdiagnostic", "form", "rhythm")
  ]
  assert default.mode == "probe" and default.data.lead == "I" and default.data.window == 5000
  assert default.train.learning_rate == 1e-3 and default.train.patience == 5
  assert default.bootstrap.resamples == 1000 and default.embed_batch_size == 64
  assert default.tasks.ptbxl_rhythm.split == "predefined"
  for bad, match in (
    ("", "needs a task"),
    ("nope", "Unknown task"),
    ("sex,foo", "Unknown eval"),
    ("sex,window=x", "not a valid int"),
    ("sex,split=0.5/0.5", "three"),
    ("sex,windows=some", "windows"),
    ("sex,embed_batch=0", "embed_batch"),
  ):
    with pytest.raises(ValueError, match=match):
      eval_config.get_config(bad)


def test_parse_model_entry():
  assert models.parse_model_entry("/runs/a") == (None, "/runs/a", None)
  assert models.parse_model_entry("clef_m=w/clef.ckpt@medium") == (
    "clef_m",
    "w/clef.ckpt",
    "medium",
  )
  assert models.parse_model_entry("x.pt@large") == (None, "x.pt", "large")
  assert models.parse_model_entry("a@b/c") == (None, "a@b/c", None)
  with pytest.raises(ValueError, match="Size"):
    models.load_backbone(__file__)  # a file with no size


def _records(**fields):
  n = len(next(iter(fields.values())))
  return records.Records(
    x=np.zeros((n, 4), np.float32),
    owner=np.arange(n),
    ids=[str(i) for i in range(n)],
    patients=[str(i) for i in range(n)],
    splits=[""] * n,
    fields=fields,
    vocabularies={"rhythm": ["AFIB", "SR"]},
    source="t",
    skipped=[],
  )


def test_make_targets():
  task = dict(tasks.TASKS["sex"].as_config(), class_names=("female", "male"), codes=False)
  t = task_spec.make_targets(task, _records(sex=["M", "F", None, "M"]), np.zeros(4))
  np.testing.assert_array_equal(t.y, [1, 0, -1, 1])
  np.testing.assert_array_equal(t.valid, [True, True, False, True])
  t = task_spec.make_targets(
    tasks.TASKS["age"].as_config(), _records(age=[50.0, np.nan, None]), np.zeros(3)
  )
  np.testing.assert_array_equal(t.valid, [True, False, False])
  # Dx: classes = codes with >= min_positives positives among the *train* records.
  dx = [[1, 2], [1], [2, 3], [], [3, 3], [3]]
  split = np.array([0, 0, 0, 0, 2, 2])
  task = dict(tasks.TASKS["challenge_dx"].as_config(), min_positives=2)
  t = task_spec.make_targets(task, _records(dx=dx), split)
  assert t.class_names == ["1 (1)", "2 (2)"]  # 3 has one train positive
  np.testing.assert_array_equal(t.valid, [True, True, True, False, True, True])
  np.testing.assert_array_equal(t.y[:, 0], [1, 1, 0, 0, 0, 0])
  # Multi-hot: records with no label of the task are dropped; names from the dataset.
  task = dict(tasks.TASKS["ptbxl_rhythm"].as_config(), codes=False)
  t = task_spec.make_targets(task, _records(rhythm=[[0, 1], [0, 0], [1, 1]]), np.zeros(3))
  assert t.class_names == ["AFIB", "SR"]
  np.testing.assert_array_equal(t.valid, [True, False, True])


def test_lead_windows_and_record_mean():
  fs = 250.0
  x = np.sin(2 * np.pi * 1.1 * np.arange(int(2.3 * fs)) / fs)  # 2.3 s -> 2 windows of 1 s
  first = records.lead_windows(x, fs, window=500)
  every = records.lead_windows(x, fs, window=500, windows="all")
  assert first.shape == (1, 500) and every.shape == (2, 500)
  # The record is resampled whole before it is cut, so window 0 differs from the first-window
  # contract only through the filters' edges.
  assert np.corrcoef(every[0], first[0])[0, 1] > 0.99
  assert abs(every[1].mean()) < 1e-5 and every[1].std() == pytest.approx(1.0, abs=1e-3)
  assert records.lead_windows(x[:100], fs, window=500, windows="all").shape == (1, 500)
  v = np.array([[1.0, 2.0], [3.0, 4.0], [10.0, 20.0]])
  np.testing.assert_allclose(
    heads.record_mean(v, np.array([0, 0, 1]), 3), [[2.0, 3.0], [10.0, 20.0], [0.0, 0.0]]
  )


def test_fit_stops_early_and_returns_the_best_params():
  fns = heads.make_head_fns(
    lambda p, x: x @ p["kernel"] + p["bias"],
    heads.make_loss("binary"),
    learning_rate=1e-2,
    weight_decay=0.0,
  )
  x = np.random.default_rng(0).standard_normal((32, 3)).astype(np.float32)
  y = (x[:, 0] > 0).astype(np.float32)
  scripted = iter([1.0, 0.5, 0.6, 0.4995, 0.7, 0.8, 0.9, 0.3])  # 0.4995: < min_delta better
  seen = []

  def val_loss(p):
    seen.append(np.asarray(p["kernel"]).copy())
    return next(scripted)

  params, summary = heads.fit(
    fns,
    heads.init_head(3, 1, 0),
    x,
    y,
    val_loss=val_loss,
    batch_size=8,
    max_epochs=20,
    patience=5,
    min_delta=1e-3,
    seed=0,
  )
  # Improvement for early stopping needs min_delta (epoch 2 is the reference, 4 does not beat it
  # by 1e-3), so it stops after epochs 3-7; the best weights are those of the lowest loss (4).
  assert summary["epochs"] == 7 and summary["best_epoch"] == 4
  assert summary["best_val_loss"] == pytest.approx(0.4995)
  np.testing.assert_array_equal(np.asarray(params["kernel"]), seen[3])


def test_probe_head_learns_informative_embeddings():
  """The probe's head (AdamW + early stopping) on embeddings that carry the label."""
  rng = np.random.default_rng(1)
  n, d = 600, 16
  y = rng.integers(0, 3, n)
  z = (rng.standard_normal((n, d)) + 1.5 * np.eye(d)[y]).astype(np.float32)
  fns = heads.make_head_fns(
    lambda p, x: x @ p["kernel"] + p["bias"],
    heads.make_loss("multiclass"),
    learning_rate=1e-2,
    weight_decay=1e-5,
  )
  loss = heads.make_loss("multiclass")
  val = lambda p: float(
    loss(heads.predict_batched(fns, p, z[400:500], 64), y[400:500], np.ones(100))
  )
  params, summary = heads.fit(
    fns,
    heads.init_head(d, 3, 0),
    z[:400],
    y[:400],
    val_loss=val,
    batch_size=32,
    max_epochs=50,
    patience=5,
    min_delta=1e-3,
    seed=0,
  )
  probs = scoring.metric_scores("multiclass", heads.predict_batched(fns, params, z[500:], 64))
  assert metrics.ovr_macro_auroc(y[500:], probs) > 0.85
  assert summary["history"][-1]["train_loss"] < summary["history"][0]["train_loss"]


@pytest.mark.parametrize("kind", ["multiclass", "binary", "regression"])
def test_ridge_head_separates_informative_from_noise(kind):
  """The closed-form probe: informative embeddings score high, noise at chance; L2 from the grid
  by validation error (checked against an independent lstsq fit)."""
  rng = np.random.default_rng(1)
  n, d = 400, 16
  y = rng.integers(0, 3 if kind == "multiclass" else 2, n)
  informative = rng.standard_normal((n, d)) + 1.5 * np.eye(d)[y]  # class shifts a feature
  noise = rng.standard_normal((n, d))
  rows = {"train": np.arange(250), "validation": np.arange(250, 300), "test": np.arange(300, n)}
  k = 3 if kind == "multiclass" else 1
  target = y.astype(np.float64) if kind == "regression" else y
  results = {}
  for name, z in (("good", informative), ("bad", noise)):
    z = heads.standardize(z[rows["train"]], z)[1]
    out, summary = heads.ridge_head(z, target, rows, kind=kind, outputs=k)
    assert summary["l2"] in heads.L2_GRID
    assert summary["best_val_loss"] == min(summary["val_loss"].values())
    s = scoring.metric_scores(kind, out)
    yt = y[rows["test"]]
    results[name] = (
      metrics.ovr_macro_auroc(yt, s) if kind == "multiclass" else metrics.auroc(yt == 1, s)
    )
  assert results["good"] > 0.85 and abs(results["bad"] - 0.5) < 0.1
  # Ridge with l2 = 0 is ordinary least squares.
  x = rng.standard_normal((50, 4))
  t = rng.standard_normal((50, 2))
  w, b = heads.fit_ridge(x, t, 0.0)
  ref = np.linalg.lstsq(np.c_[x, np.ones(50)], t, rcond=None)[0]
  np.testing.assert_allclose(np.r_[w, b[None]], ref, atol=1e-10)


def test_probe_heads_through_the_protocol(monkeypatch):
  """Both heads run through `protocol.evaluate` on one set of records (a stub backbone whose
  embedding carries the label), and ridge refuses fine-tuning."""
  import flax.linen as nn
  import jax

  class Stub(nn.Module):
    features: int = 4

    @nn.compact
    def __call__(self, x, train=False):
      scale = self.param("scale", nn.initializers.ones, (4,))
      return x[:, :4, 0] * scale, {}

  rng = np.random.default_rng(0)
  n = 120
  y = rng.integers(0, 2, n)
  x = rng.standard_normal((n, 16)).astype(np.float32)
  x[:, 0] += 2.0 * y
  recs = records.Records(
    x=x,
    owner=np.arange(n),
    ids=[str(i) for i in range(n)],
    patients=[str(i) for i in range(n)],
    splits=["train"] * 80 + ["validation"] * 20 + ["test"] * 20,
    fields={"sex": list(y)},
    vocabularies={},
    source="stub",
    skipped=[],
  )
  monkeypatch.setattr(records, "load_records", lambda key, label_keys, data: recs)
  monkeypatch.setattr(protocol, "_check_datasets", lambda groups, data: None)
  model = Stub()
  params = jax.device_get(model.init(jax.random.key(0), x[:1, :, None])["params"])
  backbone = models.Backbone(
    label="stub", name="stub", size="small", source="stub", model=model, params=params
  )
  aurocs = {}
  for head in heads.HEADS:
    config = eval_config.get_config(f"demo_sex,resamples=50,lr=0.05,head={head}")
    report = protocol.evaluate(config, [backbone])
    aurocs[head] = report["tasks"]["demo_sex"]["metrics"]["auroc"]["stub"]["value"]
    assert ("l2" in report["tasks"]["demo_sex"]["training"]["stub"]) == (head == "ridge")
  assert min(aurocs.values()) > 0.85, aurocs
  with pytest.raises(ValueError, match="ridge"):
    protocol.evaluate(eval_config.get_config("demo_sex,finetune,head=ridge"), [backbone])
  with pytest.raises(ValueError, match="head must be"):
    protocol.evaluate(eval_config.get_config("demo_sex,head=lasso"), [backbone])


def test_resolve_dataset_sorts_versions_numerically(tmp_path):
  for version in ("1.9.0", "1.10.0", "1.2.0"):
    (tmp_path / "ds" / "cfg" / version).mkdir(parents=True)
    (tmp_path / "ds" / "cfg" / version / "dataset_info.json").write_text("{}")
  assert built.resolve_dataset("ds/cfg", tmp_path).name == "1.10.0"
  assert built.resolve_dataset("ds", tmp_path).name == "1.10.0"  # the only config
  (tmp_path / "flat" / "2.0.0").mkdir(parents=True)  # built without configs
  (tmp_path / "flat" / "2.0.0" / "dataset_info.json").write_text("{}")
  assert built.resolve_dataset("flat", tmp_path) == tmp_path / "flat" / "2.0.0"


def test_cli_help_and_deprecated_model_flag(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.run(
    [sys.executable, "-m", "clef_jax.evaluate", "--help"],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "--model_workdir" in proc.stdout and "--torch_weights" in proc.stdout
  proc = subprocess.run(
    [
      sys.executable,
      "-m",
      "clef_jax.evaluate",
      "--config=configs/eval.py:sex",
      f"--workdir={tmp_path / 'missing'}",
      f"--output={tmp_path / 'out'}",
    ],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert proc.returncode == 1
  assert "--workdir is deprecated; use --model_workdir" in proc.stderr
  assert proc.stderr.strip().splitlines()[-1].startswith("error: No workdir or weight file")
  assert not (tmp_path / "out").exists()


def test_resolve_dataset(tmp_path):
  with pytest.raises(FileNotFoundError, match="not built"):
    built.resolve_dataset("ptbxl/100hz", tmp_path)
  for name in ("a", "b"):
    (tmp_path / "synthetic_ecg" / name / "1.0.0").mkdir(parents=True)
    (tmp_path / "synthetic_ecg" / name / "1.0.0" / "dataset_info.json").write_text("{}")
  with pytest.raises(FileNotFoundError, match="Several builds"):
    built.resolve_dataset("synthetic_ecg", tmp_path)
  version = tmp_path / "synthetic_ecg" / "a" / "1.0.0"
  assert built.resolve_dataset("synthetic_ecg/a", tmp_path) == version
  assert built.resolve_dataset("anything", version) == version


# ------------------------------------------------------------------------------------------------
# End to end.
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, fast_compiles_module):
  """A workdir pretrained with `configs/small.py:tiny` for 8 steps (window 256), in-process.

  Under pytest-xdist the workers share it (made once, under a lock, beside their temp roots).
  """
  from clef_jax import train_loop
  from clef_jax.configs import small

  base = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    base = base.parent
  workdir, done = base / "evaluate_test_pretrained", base / "evaluate_test_pretrained.done"
  with open(base / "evaluate_test_pretrained.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not done.exists():
      config = small.get_config("tiny,steps=8")
      config.input.data_dir = os.fspath(workdir / "data")
      config.mesh.num_devices = 1
      config.evals.probe.enabled = False
      config.ckpt.export_format = ""
      config.log.plots = False
      assert train_loop.train_and_evaluate(config, workdir)["step"] == 8
      done.touch()
  return workdir


def _check_against_predictions(output, report):
  """Every reported point estimate equals an independent recomputation from predictions.npz."""
  pred = np.load(output / "predictions.npz")
  for task, t in report["tasks"].items():
    y = pred[f"{task}/y"]
    assert len(y) == t["n"]["test"] == len(pred[f"{task}/ids"])
    for model in report["models"]:
      s = pred[f"{task}/scores/{model}"]
      m = t["metrics"]
      if t["kind"] == "binary":
        assert m["auroc"][model]["value"] == pytest.approx(pair_count_auroc(y, s), abs=1e-12)
      elif t["kind"] == "regression":
        assert m["mae"][model]["value"] == pytest.approx(np.mean(np.abs(y - s)))
        assert m["rmse"][model]["value"] == pytest.approx(np.sqrt(np.mean((y - s) ** 2)))
      for r in m.values():
        assert r[model]["low"] <= r[model]["value"] <= r[model]["high"]


def _challenge_labels(records_dir):
  """Sex and age of each record, read independently of clef_jax (header comment lines)."""
  out = {}
  for hea in sorted(records_dir.glob("*.hea")):
    lines = dict(
      l[1:].strip().split(": ", 1)
      for l in hea.read_text().splitlines()
      if l.startswith("#") and ": " in l
    )
    out[hea.stem] = (
      lines.get("Sex"),
      float(lines["Age"]) if lines.get("Age", "").isdigit() else None,
    )
  return out


@pytest.mark.slow
def test_cli_on_challenge_records(shared_data, pretrained, tmp_path):
  """`python -m clef_jax.evaluate` on the real records: sex AUROC and age MAE, pretrained vs
  random init, with every output file."""
  records = shared_data / "cinc2021"
  out = tmp_path / "report"
  env = dict(
    os.environ,
    JAX_PLATFORMS="cpu",
    JAX_DISABLE_MOST_OPTIMIZATIONS="1",
    XLA_FLAGS="--xla_force_host_platform_device_count=1",
  )
  proc = subprocess.run(
    [
      sys.executable,
      "-m",
      "clef_jax.evaluate",
      f"--config=configs/eval.py:sex+age,wfdb={records},window=256,split=0.5/0.2/0.3,batch=8",
      f"--model_workdir=pretrained={pretrained}",
      f"--output={out}",
    ],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "| sex | AUROC ↑ |" in proc.stdout and "| age | MAE (years) ↓ |" in proc.stdout
  assert {p.name for p in out.iterdir()} == {
    "report.md",
    "report.json",
    "report.png",
    "predictions.npz",
  }
  report = json.loads((out / "report.json").read_text())
  assert list(report["models"]) == ["random init", "pretrained"]
  assert report["models"]["pretrained"]["params"] == report["models"]["random init"]["params"]
  assert report["protocol"]["lead"] == "I" and report["protocol"]["bootstrap"]["resamples"] == 1000
  labels = _challenge_labels(records)
  sexes = [s for s, _ in labels.values() if s in ("Male", "Female")]
  ages = [a for _, a in labels.values() if a is not None]
  assert sum(report["tasks"]["sex"]["n"].values()) == len(sexes) == 49
  assert sum(report["tasks"]["age"]["n"].values()) == len(ages)
  assert report["tasks"]["sex"]["n"] == {"train": 24, "validation": 10, "test": 15}
  # Test targets are the header values of the test records.
  pred = np.load(out / "predictions.npz")
  for rid, y in zip(pred["age/ids"], pred["age/y"]):
    assert y == labels[rid][1]
  for rid, y in zip(pred["sex/ids"], pred["sex/y"]):
    assert y == (labels[rid][0] == "Male")
  _check_against_predictions(out, report)
  for model in report["models"]:
    mae = report["tasks"]["age"]["metrics"]["mae"][model]
    assert 3 < mae["value"] < 40 and mae["resamples"] == 1000
    assert 0 <= report["tasks"]["sex"]["metrics"]["auroc"][model]["value"] <= 1
  assert report["tasks"]["sex"]["metrics"]["auroc"]["pretrained"]["delta"] == pytest.approx(
    report["tasks"]["sex"]["metrics"]["auroc"]["pretrained"]["value"]
    - report["tasks"]["sex"]["metrics"]["auroc"]["random init"]["value"]
  )


@pytest.mark.slow
def test_finetune_on_challenge_records(shared_data, fast_compiles, tmp_path):
  """Full fine-tuning (backbone + head) runs, stops, and reports consistent metrics."""
  config = eval_config.get_config(
    f"sex,finetune,wfdb={shared_data / 'cinc2021'},window=256,split=0.5/0.2/0.3,epochs=2,"
    "batch=16,resamples=200"
  )
  backbone = models.random_backbone("net1d", "small", seed=0, window=256)
  before = np.asarray(backbone.params["stem_conv"]["kernel"]).copy()
  report = protocol.evaluate(config, [backbone])
  report_lib.write_report(report, tmp_path, plots=False)
  summary = report["tasks"]["sex"]["training"]["random init"]
  assert summary["epochs"] == 2 and summary["best_epoch"] in (1, 2)
  assert all(
    np.isfinite(h["train_loss"]) and np.isfinite(h["val_loss"]) for h in summary["history"]
  )
  np.testing.assert_array_equal(backbone.params["stem_conv"]["kernel"], before)  # not mutated
  _check_against_predictions(tmp_path, report)


@pytest.mark.slow
def test_demo_pretrained_model_beats_chance(pretrained, tmp_path):
  """The demo archive's labels: the pretrained model is above chance, with intervals.

  The archive is the demo's simulator (800 subjects, 2 s); the model saw 256-sample windows in
  pretraining and is probed on the whole 2 s (a CNN takes any length), which is what carries the
  rhythm and age information. Subjects are re-split 50/10/40 % for a 300-record test set.
  """
  data = tmp_path / "tfds"
  build = subprocess.run(
    [
      sys.executable,
      "-m",
      "clef_jax.build",
      "synthetic_ecg",
      "--data_dir",
      os.fspath(data),
      "--option",
      "num_subjects=800",
      "--option",
      "duration_s=2.0",
    ],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert build.returncode == 0, build.stderr[-2000:]
  config = eval_config.get_config(f"demo,data_dir={data},window=1000,split=0.5/0.1/0.4,batch=16")
  for task in config.tasks.values():
    task.split = "patient"
  report = protocol.run(config, model=f"pretrained={pretrained}", output=tmp_path / "out")
  tasks = report["tasks"]
  assert tasks["demo_rhythm"]["n"]["test"] > 300
  assert tasks["demo_rhythm"]["classes"] == ["sinus", "af", "ectopic"]
  assert "| demo_risk_high | AUROC ↑ |" in (tmp_path / "out" / "report.md").read_text()
  for name, key in (("demo_risk_high", "auroc"), ("demo_rhythm", "macro_auroc")):
    result = tasks[name]["metrics"][key]["pretrained"]
    assert result["low"] > 0.55, (name, result)  # chance: 0.5
  age = tasks["demo_age"]["metrics"]
  assert age["r2"]["pretrained"]["low"] > 0.1  # chance (the mean): 0
  _check_against_predictions(tmp_path / "out", report)
