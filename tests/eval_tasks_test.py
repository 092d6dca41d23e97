"""The task registry: the paper's 18 tasks, their groups, and their labels in the builders' features."""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from clef_jax.configs import eval as eval_config
from clef_jax.evaluation import tasks

REPO = pathlib.Path(__file__).resolve().parents[1]
DATASET_GROUPS = (
  "ptbxl",
  "chapman",
  "icentia11k",
  "mc_med",
  "mimic_iv_lvef",
  "music_scd",
  "aurora_bp",
)


def test_paper_has_18_tasks_13_auroc_and_5_mae():
  paper = [tasks.TASKS[n] for n in tasks.GROUPS["paper"]]
  assert len(paper) == 18 and [t.number for t in paper] == list(range(1, 19))
  metrics = [t.metric for t in paper]
  assert sum("AUROC" in m for m in metrics) == 13 and metrics.count("MAE") == 5
  assert all(t.kind == "regression" for t in paper[13:])
  assert {t.group for t in paper} == set(DATASET_GROUPS) == set(tasks.PAPER_GROUPS)
  # One group per dataset, each holding exactly that dataset's paper tasks.
  for group in DATASET_GROUPS:
    assert tasks.GROUPS[group] == tuple(t.name for t in paper if t.group == group)
  assert list(eval_config.get_config("paper").tasks.keys()) == list(tasks.PAPER_TASKS)
  by_group = {g: len(tasks.GROUPS[g]) for g in DATASET_GROUPS}
  assert by_group == {
    "ptbxl": 5,
    "chapman": 1,
    "icentia11k": 2,
    "mc_med": 5,
    "mimic_iv_lvef": 2,
    "music_scd": 1,
    "aurora_bp": 2,
  }


def test_protocol_details_of_the_paper_tasks():
  t = tasks.TASKS
  # The paper's class counts (docs/method.md §F.2).
  sizes = {
    "ptbxl_diagnostic": 44,
    "ptbxl_subdiagnostic": 23,
    "ptbxl_superdiagnostic": 5,
    "ptbxl_form": 19,
    "ptbxl_rhythm": 12,
    "chapman_labels": 38,
  }
  assert {n: t[n].num_classes for n in sizes} == sizes
  assert [
    len(t[n].classes)
    for n in (
      "icentia11k_beat",
      "icentia11k_rhythm",
      "mc_med_ed_dispo",
      "mc_med_dc_dispo",
      "mc_med_acuity",
      "music_scd_outcome",
      "mimic_iv_lvef_class",
    )
  ] == [3, 3, 4, 6, 5, 4, 2]
  assert {n for n, x in t.items() if x.balanced} == {
    "icentia11k_beat",
    "icentia11k_rhythm",
    "music_scd_outcome",
  }
  assert {n for n in tasks.PAPER_TASKS if not t[n].bandpass} == {
    "mimic_iv_lvef_class",
    "mimic_iv_lvef",
    "music_scd_outcome",
    "aurora_bp_sbp",
    "aurora_bp_dbp",
  }
  assert [n for n in tasks.PAPER_TASKS if not t[n].normalize] == ["music_scd_outcome"]
  assert [n for n in tasks.PAPER_TASKS if t[n].crop == "random"] == [
    "aurora_bp_sbp",
    "aurora_bp_dbp",
  ]
  # 12-lead datasets follow the config's lead (I by default); single-lead ones fix theirs.
  assert {n for n in tasks.PAPER_TASKS if not t[n].lead} == {
    *tasks.GROUPS["ptbxl"],
    "chapman_labels",
    "mimic_iv_lvef_class",
    "mimic_iv_lvef",
  }
  assert {t[n].lead for n in tasks.GROUPS["mc_med"]} == {"II"}
  assert {t[n].unit for n in ("mc_med_sbp", "mc_med_dbp", "aurora_bp_sbp", "aurora_bp_dbp")} == {
    "mmHg"
  }
  assert t["mimic_iv_lvef"].unit == "%"
  assert all(t[n].split == "predefined" for n in tasks.PAPER_TASKS)
  config = eval_config.get_config("paper")
  assert config.data.lead == "I" and eval_config.get_config("paper,lead=II").data.lead == "II"
  lt50 = eval_config.get_config("mimic_iv_lvef,lvef=lvef_lt_50")
  assert {x.dataset for x in lt50.tasks.values()} == {"mimic_iv_lvef/lvef_lt_50"}
  assert eval_config.get_config("paper,labels=0.01").train.label_fraction == 0.01
  for bad, match in (("paper,labels=0", "labels must be"), ("paper,lvef=x", "lvef must be")):
    with pytest.raises(ValueError, match=match):
      eval_config.get_config(bad)


def _features(dataset):
  """The TFDS features and metadata a builder declares (no build needed)."""
  from clef_jax import build

  name, _, config = dataset.partition("/")
  builder = build.builder_class(name)(data_dir=os.devnull + "_unused", config=config or None)
  return builder.info.features, builder.info.metadata or {}


@pytest.mark.parametrize("group", DATASET_GROUPS)
def test_labels_are_the_builders_features(group):
  """Each task's label is a feature of its builder, with the dtype its kind needs and the
  classes the builder documents (its own constants, read from the builder module)."""
  pytest.importorskip("tensorflow_datasets")
  from clef_jax import build

  for name in tasks.GROUPS[group]:
    task = tasks.TASKS[name]
    features, metadata = _features(
      task.dataset
      if "/" in task.dataset or group != "mimic_iv_lvef"
      else task.dataset + "/csv_class"
    )
    assert task.label in features, (name, task.label, list(features))
    feature = features[task.label]
    if task.kind == "multilabel":
      assert feature.shape == (task.num_classes,) and feature.np_dtype == np.uint8
    elif task.kind == "regression":
      assert feature.np_dtype == np.float32 and feature.shape == ()
    else:
      assert feature.np_dtype == np.int64 and feature.shape == ()
    module = build.dataset_module(task.dataset.partition("/")[0])
    if group == "icentia11k":
      config = task.dataset.partition("/")[2]
      assert task.class_names == module.TASKS[config][1] == tuple(metadata["classes"])
    elif group == "mc_med" and task.kind == "multiclass":
      assert len(task.class_names) == len(module.CLASS_TASKS[task.label])
      if task.label != "triage_acuity":
        assert task.class_names == module.CLASS_TASKS[task.label]
    elif group == "music_scd":
      assert task.class_names == module.CLASS_NAMES
    elif group == "chapman":
      assert len(module.LABELS) == 38 and list(metadata["labels"]) == list(module.LABELS)


def test_list_tasks_prints_every_task():
  env = dict(os.environ, PYTHONPATH=os.fspath(REPO))
  proc = subprocess.run(
    [sys.executable, "-m", "clef_jax.evaluate", "--list_tasks"],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  lines = proc.stdout.strip().splitlines()
  assert len(lines) == len(tasks.TASKS)
  rows = {line.split("\t")[0]: line.split("\t") for line in lines}
  for name, t in tasks.TASKS.items():
    assert rows[name] == [name, t.group, t.dataset, t.kind, t.metric]
  assert rows["mc_med_sbp"][4] == "MAE" and rows["icentia11k_beat"][4] == "OvR macro AUROC"
