"""The downstream task registry: every task, its group, and the selection by name or group.

A task is one `Task` entry (its fields are `clef_jax.evaluation.task_spec`): the dataset it
reads, the label feature, the kind, the split and, where the protocol fixes them, the input lead,
window and preprocessing. Adding a task is one entry in `TASKS` (and, for a new dataset, its
builder under `clef_jax/datasets/`); `configs/eval.py` selects tasks by name or group.

The paper's 18 tasks over 7 datasets (docs/method.md §F.2) are `PAPER_TASKS`, in the paper's
order (13 classification, 5 regression); the group `paper` selects them all and each dataset is a
group of its own (`ptbxl`, `chapman`, `icentia11k`, `mc_med`, `mimic_iv_lvef`, `music_scd`,
`aurora_bp`).
"""

from __future__ import annotations

from clef_jax.evaluation.task_spec import Task

_PTBXL_CLASSES = {
  "diagnostic": 44,
  "subdiagnostic": 23,
  "superdiagnostic": 5,
  "form": 19,
  "rhythm": 12,
}
_SYNTHETIC = "synthetic_ecg"
_CHALLENGE = "physionet_challenge/first_window"
_ICENTIA_BEAT = ("N", "S", "V")
_ICENTIA_RHYTHM = ("N", "AFIB", "AFL")
_ED_DISPO = ("Discharge", "Inpatient", "Observation", "ICU")
_DC_DISPO = (
  "Home/Self-care",
  "Care facility",
  "Hospital transfer",
  "Hospice/End-of-life",
  "Psychiatric/Rehab",
  "Other",
)
_ACUITY = ("ESI 1", "ESI 2", "ESI 3", "ESI 4", "ESI 5")
_MUSIC = ("survivor", "non-cardiac death", "sudden cardiac death", "pump-failure death")


def _indices(names: tuple[str, ...]) -> tuple[int, ...]:
  return tuple(range(len(names)))


# The paper's 18 tasks (docs/method.md §F.2), in its order. The builders store class indices
# (their class maps and groupings are in each builder's docstring); -1 / NaN = no label, which
# drops the record from that task. Lead "" = the config's lead (I by default, as the paper; II
# as the released code) for the 12-lead datasets; single-lead datasets fix their one channel.
_PAPER: tuple[Task, ...] = (
  *(
    Task(
      f"ptbxl_{name}",
      "ptbxl",
      "ptbxl/100hz",
      name,
      "multilabel",
      "predefined",
      num_classes=k,
      number=i + 1,
      title=f"PTB-XL {name} statements ({k} labels)",
    )
    for i, (name, k) in enumerate(_PTBXL_CLASSES.items())
  ),
  Task(
    "chapman_labels",
    "chapman",
    "chapman",
    "labels",
    "multilabel",
    "predefined",
    num_classes=38,
    number=6,
    title="Chapman-Shaoxing/Ningbo rhythm and morphology (HeartLang's 38 labels)",
  ),
  Task(
    "icentia11k_beat",
    "icentia11k",
    "icentia11k/beat",
    "label",
    "multiclass",
    "predefined",
    classes=_indices(_ICENTIA_BEAT),
    class_names=_ICENTIA_BEAT,
    lead="I",
    balanced=True,
    number=7,
    title="Icentia11k beat type N/S/V (10 s around the beat)",
  ),
  Task(
    "icentia11k_rhythm",
    "icentia11k",
    "icentia11k/rhythm",
    "label",
    "multiclass",
    "predefined",
    classes=_indices(_ICENTIA_RHYTHM),
    class_names=_ICENTIA_RHYTHM,
    lead="I",
    balanced=True,
    number=8,
    title="Icentia11k rhythm N/AFIB/AFL (10 s from the onset)",
  ),
  Task(
    "mc_med_ed_dispo",
    "mc_med",
    "mc_med",
    "ed_dispo",
    "multiclass",
    "predefined",
    classes=_indices(_ED_DISPO),
    class_names=_ED_DISPO,
    lead="II",
    number=9,
    title="MC-MED emergency-department disposition (4 classes)",
  ),
  Task(
    "mc_med_dc_dispo",
    "mc_med",
    "mc_med",
    "dc_dispo",
    "multiclass",
    "predefined",
    classes=_indices(_DC_DISPO),
    class_names=_DC_DISPO,
    lead="II",
    number=10,
    title="MC-MED discharge disposition (6 groups)",
  ),
  Task(
    "mc_med_acuity",
    "mc_med",
    "mc_med",
    "triage_acuity",
    "multiclass",
    "predefined",
    classes=_indices(_ACUITY),
    class_names=_ACUITY,
    lead="II",
    number=11,
    title="MC-MED triage acuity (ESI 1-5)",
  ),
  Task(
    "mimic_iv_lvef_class",
    "mimic_iv_lvef",
    "mimic_iv_lvef",
    "lvef_class",
    "binary",
    "predefined",
    classes=(0, 1),
    class_names=("class 0", "class 1"),
    bandpass=False,
    number=12,
    title="MIMIC-IV-ECG LVEF class (ECGFounder's LVEF.csv label)",
  ),
  Task(
    "music_scd_outcome",
    "music_scd",
    "music_scd",
    "label",
    "multiclass",
    "predefined",
    classes=_indices(_MUSIC),
    class_names=_MUSIC,
    lead="I",
    bandpass=False,
    normalize=False,
    balanced=True,
    number=13,
    title="MUSIC outcome: survivor / non-cardiac / sudden cardiac / pump-failure death",
  ),
  Task(
    "mimic_iv_lvef",
    "mimic_iv_lvef",
    "mimic_iv_lvef",
    "lvef",
    "regression",
    "predefined",
    unit="%",
    bandpass=False,
    number=14,
    title="MIMIC-IV-ECG LVEF (%)",
  ),
  Task(
    "mc_med_sbp",
    "mc_med",
    "mc_med",
    "triage_sbp",
    "regression",
    "predefined",
    unit="mmHg",
    lead="II",
    number=15,
    title="MC-MED triage systolic BP",
  ),
  Task(
    "mc_med_dbp",
    "mc_med",
    "mc_med",
    "triage_dbp",
    "regression",
    "predefined",
    unit="mmHg",
    lead="II",
    number=16,
    title="MC-MED triage diastolic BP",
  ),
  Task(
    "aurora_bp_sbp",
    "aurora_bp",
    "aurora_bp/auscultatory",
    "baseline_sbp",
    "regression",
    "predefined",
    unit="mmHg",
    lead="I",
    bandpass=False,
    crop="random",
    number=17,
    title="Aurora-BP baseline systolic BP (auscultatory)",
  ),
  Task(
    "aurora_bp_dbp",
    "aurora_bp",
    "aurora_bp/auscultatory",
    "baseline_dbp",
    "regression",
    "predefined",
    unit="mmHg",
    lead="I",
    bandpass=False,
    crop="random",
    number=18,
    title="Aurora-BP baseline diastolic BP (auscultatory)",
  ),
)
PAPER_TASKS: tuple[str, ...] = tuple(t.name for t in _PAPER)
# The paper-format table lists the datasets in this order (rows grouped by dataset).
PAPER_GROUPS: tuple[str, ...] = (
  "ptbxl",
  "chapman",
  "icentia11k",
  "mc_med",
  "mimic_iv_lvef",
  "music_scd",
  "aurora_bp",
)
DATASET_TITLES = {
  "ptbxl": "PTB-XL",
  "chapman": "Chapman-Shaoxing",
  "icentia11k": "Icentia11k",
  "mc_med": "MC-MED",
  "mimic_iv_lvef": "MIMIC-IV-ECG",
  "music_scd": "MUSIC",
  "aurora_bp": "Aurora-BP",
  "challenge": "PhysioNet Challenge",
  "demo": "synthetic demo",
}
_REGISTRY: tuple[Task, ...] = (
  *_PAPER,
  Task(
    "challenge_dx",
    "challenge",
    _CHALLENGE,
    "dx",
    "multilabel",
    "patient",
    codes=True,
    min_positives=10,
    wfdb=True,
    title="Challenge SNOMED Dx codes",
  ),
  Task(
    "sex",
    "challenge",
    _CHALLENGE,
    "sex",
    "binary",
    "patient",
    classes=("F", "M"),
    class_names=("female", "male"),
    wfdb=True,
    title="sex from the header",
  ),
  Task(
    "age",
    "challenge",
    _CHALLENGE,
    "age",
    "regression",
    "patient",
    unit="years",
    wfdb=True,
    title="age from the header",
  ),
  Task(
    "demo_sex",
    "demo",
    _SYNTHETIC,
    "sex",
    "binary",
    "predefined",
    classes=(0, 1),
    class_names=("female", "male"),
    title="simulated sex",
  ),
  Task(
    "demo_age",
    "demo",
    _SYNTHETIC,
    "age",
    "regression",
    "predefined",
    unit="years",
    title="simulated age",
  ),
  Task(
    "demo_age_band",
    "demo",
    _SYNTHETIC,
    "age_band",
    "multiclass",
    "predefined",
    classes=(0, 1, 2, 3, 4),
    class_names=("40-49", "50-59", "60-69", "70-79", "80-89"),
    title="simulated age band",
  ),
  Task(
    "demo_rhythm",
    "demo",
    _SYNTHETIC,
    "rhythm",
    "multiclass",
    "predefined",
    classes=(0, 1, 2),
    class_names=("sinus", "af", "ectopic"),
    title="simulated rhythm",
  ),
  Task(
    "demo_risk_high",
    "demo",
    _SYNTHETIC,
    "risk_high",
    "binary",
    "predefined",
    classes=(0, 1),
    class_names=("low", "high"),
    title="simulated high risk score",
  ),
)
TASKS: dict[str, Task] = {t.name: t for t in _REGISTRY}
GROUPS: dict[str, tuple[str, ...]] = {"paper": PAPER_TASKS}
for _task in _REGISTRY:
  GROUPS.setdefault(_task.group, ())
  GROUPS[_task.group] += (_task.name,)


def list_tasks() -> list[str]:
  """One line per registered task: name, group, dataset, kind, metric (tab-separated)."""
  return ["\t".join((t.name, t.group, t.dataset, t.kind, t.metric)) for t in _REGISTRY]


def task_names(spec: str) -> list[str]:
  """`"sex+age"` / `"ptbxl"` -> task names, in order, without repeats."""
  names: list[str] = []
  for item in filter(None, (s.strip() for s in spec.split("+"))):
    for name in GROUPS.get(item, (item,)):
      if name not in TASKS:
        raise ValueError(
          f"Unknown task {name!r}; choose from {', '.join(TASKS)} or a group ({', '.join(GROUPS)})."
        )
      if name not in names:
        names.append(name)
  return names
