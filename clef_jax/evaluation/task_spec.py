"""What a downstream task is: the `Task` fields, and a task's targets from loaded records.

A `Task` names the dataset it reads, the label feature, the kind (binary / multilabel /
multiclass / regression, which fixes the loss and the metric), how classes are formed, the split
(the dataset's published split or a seeded patient-level one) and, where the protocol fixes them,
the input lead, window and preprocessing, and whether training draws class-balanced batches.
`make_targets` turns a task's label feature into `Targets`. The registered tasks are
`clef_jax.evaluation.tasks`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from clef_jax.data import dx

KINDS = ("binary", "multilabel", "multiclass", "regression")
# The paper's metric per kind (docs/method.md §F.2); `scoring.METRICS` lists every reported one.
PRIMARY_METRIC = {
  "binary": "AUROC",
  "multilabel": "macro AUROC",
  "multiclass": "OvR macro AUROC",
  "regression": "MAE",
}
SPLIT_KINDS = ("predefined", "patient")
CROPS = ("start", "random")


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
    lead: input lead the protocol fixes for this task ("" = the config's `data.lead`); set for
      single-lead datasets, whose one channel the builder stores in this lead's column.
    window: samples per input at 500 Hz the protocol fixes (0 = the config's `data.window`).
    bandpass: the 0.67-40 Hz band-pass of the input contract (off where the paper's loader
      does not filter).
    normalize: the per-input z-score of the input contract (off where the paper's loader feeds
      the raw signal).
    crop: where the input window starts: "start" (the record's first samples) or "random" (a
      seeded random start per record, the paper's random crop; zero-padded when shorter).
    balanced: training draws examples with probability inverse to their class frequency (the
      paper's WeightedRandomSampler), with replacement, as many per epoch as there are.
    number: the task's number in the paper's list (docs/method.md §F.2), 0 for other tasks.
    title: what the task is, in a few words (the reports and `--list_tasks`).
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
  bandpass: bool = True
  normalize: bool = True
  crop: str = "start"
  balanced: bool = False
  number: int = 0
  title: str = ""

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f"Task {self.name}: kind must be one of {KINDS}; got {self.kind!r}.")
    if self.split not in SPLIT_KINDS:
      raise ValueError(f"Task {self.name}: split must be one of {SPLIT_KINDS}; got {self.split!r}.")
    if self.crop not in CROPS:
      raise ValueError(f"Task {self.name}: crop must be one of {CROPS}; got {self.crop!r}.")

  @property
  def metric(self) -> str:
    """The paper's metric of this task (`PRIMARY_METRIC`)."""
    return PRIMARY_METRIC[self.kind]

  def as_config(self) -> dict[str, Any]:
    """The fields a config holds (everything but the name)."""
    fields = dataclasses.asdict(self)
    del fields["name"]
    fields["class_map"] = dict(self.class_map)
    return fields


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
    index = {str(k): int(v) for k, v in class_map.items()} or {
      str(c): i for i, c in enumerate(task["classes"])
    }
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
      raise ValueError(
        f"No {task['label']} code has {task['min_positives']} train positives; "
        "lower min_positives=."
      )
    y = np.array([[k in c for k in classes] for c in codes], np.uint8).reshape(-1, len(classes))
    names = dx.dx_names()
    return Targets(y=y, valid=valid, class_names=[f"{names.get(k, k)} ({k})" for k in classes])
  y = np.array(values, np.uint8)
  if y.ndim != 2:
    raise ValueError(f"Feature {task['label']} is not a multi-hot vector (shape {y.shape}).")
  names = records.vocabularies.get(task["label"]) or [str(k) for k in range(y.shape[1])]
  return Targets(y=y, valid=y.any(axis=1), class_names=list(names))
