"""The downstream task registry and each task's targets.

A task is one `Task` entry: the dataset it reads, the label feature, the kind (binary /
multilabel / multiclass / regression, which fixes the loss and the metric), how classes are
formed, the split (the dataset's published split or a seeded patient-level one) and, where the
protocol fixes them, the input lead and window. Adding a task is one entry in `TASKS` (and, for
a new dataset, its builder under `datasets/`); `configs/eval.py` selects tasks by name or group.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np

from clef_jax.data import dx

KINDS = ("binary", "multilabel", "multiclass", "regression")
# The paper's metric per kind (docs/method.md §F.2); `scoring.METRICS` lists every reported one.
PRIMARY_METRIC = {"binary": "AUROC", "multilabel": "macro AUROC",
                  "multiclass": "OvR macro AUROC", "regression": "MAE"}
SPLIT_KINDS = ("predefined", "patient")


@dataclasses.dataclass(frozen=True)
class Task:
  """One downstream task.

  Attributes:
    name: registry key (what `configs/eval.py:NAME` selects).
    group: the group it belongs to (a dataset's tasks, selectable together).
    dataset: TFDS `name[/config]`, resolved under `data_dir`.
    label: the feature (or WFDB header field) holding the target.
    kind: one of `KINDS`.
    split: "predefined" (the dataset's published train/validation/test) or "patient" (a seeded
      patient-level split of all records, `split_fractions`).
    classes: binary/multiclass label values in class order (binary: the second is positive).
    class_names: display names (default: the values / the dataset's vocabulary).
    class_map: raw label value (as text) -> class index, for tasks that group or renumber the
      stored values (several values may share a class); overrides `classes` for the lookup.
    codes: multilabel from a list of codes (Dx): classes are the codes with at least
      `min_positives` train positives.
    min_positives: see `codes`.
    num_classes: multi-hot width stored with the dataset (documentation and checks).
    wfdb: the labels are Challenge header comments, so `wfdb=PATH` can replace the dataset.
    unit: regression unit (report only).
    lead: input lead the protocol fixes for this task ("" = the config's `data.lead`).
    window: samples per input at 500 Hz the protocol fixes (0 = the config's `data.window`).
  """

  name: str
  group: str
  dataset: str
  label: str
  kind: str
  split: str
  classes: tuple[Any, ...] = ()
  class_names: tuple[str, ...] = ()
  class_map: Mapping[str, int] = dataclasses.field(default_factory=dict)
  codes: bool = False
  min_positives: int = 0
  num_classes: int = 0
  wfdb: bool = False
  unit: str = ""
  lead: str = ""
  window: int = 0

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f"Task {self.name}: kind must be one of {KINDS}; got {self.kind!r}.")
    if self.split not in SPLIT_KINDS:
      raise ValueError(f"Task {self.name}: split must be one of {SPLIT_KINDS}; got "
                       f"{self.split!r}.")

  @property
  def metric(self) -> str:
    """The paper's metric of this task (`PRIMARY_METRIC`)."""
    return PRIMARY_METRIC[self.kind]

  def as_config(self) -> dict[str, Any]:
    """The fields a config holds (everything but the name and the group)."""
    fields = dataclasses.asdict(self)
    del fields["name"], fields["group"]
    fields["class_map"] = dict(self.class_map)
    return fields


_PTBXL_CLASSES = {"diagnostic": 44, "subdiagnostic": 23, "superdiagnostic": 5, "form": 19,
                  "rhythm": 12}
_SYNTHETIC = "synthetic_ecg"
_CHALLENGE = "physionet_challenge/first_window"
_REGISTRY: tuple[Task, ...] = (
    *(Task(f"ptbxl_{name}", "ptbxl", "ptbxl/100hz", name, "multilabel", "predefined",
           num_classes=k) for name, k in _PTBXL_CLASSES.items()),
    Task("challenge_dx", "challenge", _CHALLENGE, "dx", "multilabel", "patient", codes=True,
         min_positives=10, wfdb=True),
    Task("sex", "challenge", _CHALLENGE, "sex", "binary", "patient", classes=("F", "M"),
         class_names=("female", "male"), wfdb=True),
    Task("age", "challenge", _CHALLENGE, "age", "regression", "patient", unit="years", wfdb=True),
    Task("demo_sex", "demo", _SYNTHETIC, "sex", "binary", "predefined", classes=(0, 1),
         class_names=("female", "male")),
    Task("demo_age", "demo", _SYNTHETIC, "age", "regression", "predefined", unit="years"),
    Task("demo_age_band", "demo", _SYNTHETIC, "age_band", "multiclass", "predefined",
         classes=(0, 1, 2, 3, 4), class_names=("40-49", "50-59", "60-69", "70-79", "80-89")),
    Task("demo_rhythm", "demo", _SYNTHETIC, "rhythm", "multiclass", "predefined",
         classes=(0, 1, 2), class_names=("sinus", "af", "ectopic")),
    Task("demo_risk_high", "demo", _SYNTHETIC, "risk_high", "binary", "predefined",
         classes=(0, 1), class_names=("low", "high")),
)
TASKS: dict[str, Task] = {t.name: t for t in _REGISTRY}
GROUPS: dict[str, tuple[str, ...]] = {}
for _task in _REGISTRY:
  GROUPS.setdefault(_task.group, ())
  GROUPS[_task.group] += (_task.name,)


def task_names(spec: str) -> list[str]:
  """`"sex+age"` / `"ptbxl"` -> task names, in order, without repeats."""
  names: list[str] = []
  for item in filter(None, (s.strip() for s in spec.split("+"))):
    for name in GROUPS.get(item, (item,)):
      if name not in TASKS:
        raise ValueError(f"Unknown task {name!r}; choose from {', '.join(TASKS)} or a group "
                         f"({', '.join(GROUPS)}).")
      if name not in names:
        names.append(name)
  return names


@dataclasses.dataclass
class Targets:
  """One task's targets: `y` `(R,)` int/float or `(R, K)` multi-hot, `valid` `(R,)` bool."""

  y: np.ndarray
  valid: np.ndarray
  class_names: list[str]


def make_targets(task: Mapping[str, Any], records: Any, split: np.ndarray) -> Targets:
  """Targets of `task` (`Task.as_config()` fields, e.g. a config's task) for `records`.

  Records without a usable label are invalid for the task (unknown sex or age, no Dx code, a
  PTB-XL record without any statement of the task). Dx classes are the codes with at least
  `min_positives` positives among the valid train records.
  """
  kind, values = task["kind"], records.fields[task["label"]]
  if kind in ("binary", "multiclass"):
    class_map = dict(task.get("class_map") or {})
    index = {str(k): int(v) for k, v in class_map.items()} or \
        {str(c): i for i, c in enumerate(task["classes"])}
    y = np.array([index.get(str(v), -1) for v in values], np.int64)
    names = [str(n) for n in (task["class_names"] or task["classes"])]
    return Targets(y=y, valid=y >= 0, class_names=names)
  if kind == "regression":
    y = np.array([np.nan if v is None else float(v) for v in values], np.float64)
    return Targets(y=y, valid=np.isfinite(y), class_names=[])
  if kind != "multilabel":
    raise ValueError(f"Unknown task kind {kind!r}.")
  if task["codes"]:
    codes = [set(v or ()) for v in values]
    valid = np.array([bool(c) for c in codes])
    train = [c for c, s, ok in zip(codes, split, valid) if s == 0 and ok]
    counts: dict[int, int] = {}
    for c in train:
      for code in c:
        counts[code] = counts.get(code, 0) + 1
    classes = sorted(k for k, n in counts.items() if n >= max(1, task["min_positives"]))
    if not classes:
      raise ValueError(f"No {task['label']} code has {task['min_positives']} train positives; "
                       "lower min_positives=.")
    y = np.array([[k in c for k in classes] for c in codes], np.uint8).reshape(-1, len(classes))
    names = dx.dx_names()
    return Targets(y=y, valid=valid, class_names=[f"{names.get(k, k)} ({k})" for k in classes])
  y = np.array(values, np.uint8)
  if y.ndim != 2:
    raise ValueError(f"Feature {task['label']} is not a multi-hot vector (shape {y.shape}).")
  names = records.vocabularies.get(task["label"]) or [str(k) for k in range(y.shape[1])]
  return Targets(y=y, valid=y.any(axis=1), class_names=list(names))
