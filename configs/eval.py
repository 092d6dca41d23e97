r"""Downstream evaluation (spec §F): tasks, protocol and report options as a `ConfigDict`.

    python -m clef_jax.evaluate --config=configs/eval.py:TASKS[,OPTIONS] --workdir=W \
        [--compare=W2 --compare=clef_m=clef_medium.ckpt@medium ...] --output=OUT

TASKS is one task or several joined by `+` (or a group name), e.g.

    configs/eval.py:ptbxl                                  PTB-XL's five tasks (TFDS `ptbxl/100hz`)
    configs/eval.py:ptbxl_superdiagnostic,finetune         full fine-tuning instead of the probe
    configs/eval.py:sex+age,wfdb=../shared/data/cinc2021   straight from WFDB records
    configs/eval.py:challenge,data_dir=~/tfds              Dx, sex and age of a built Challenge set
    configs/eval.py:demo,data_dir=/tmp/clef_demo/data/synthetic_ecg/n2000_seed0_r1_fs500_2.5s/1.0.0

| option | effect |
|---|---|
| `probe` / `finetune` (or `mode=`) | frozen backbone + linear head (default) / backbone + head trained |
| `data_dir=PATH` | TFDS data dir holding the task's dataset (or the dataset's version dir itself) |
| `wfdb=PATH` | read Challenge-format WFDB records (`# Age/Sex/Dx` header comments) from PATH instead |
| `lead=I` | input lead (default I as the paper says; the released code used II) |
| `window=N` | samples per model input at 500 Hz (default 5000 = 10 s) |
| `windows=first` / `windows=all` | first 10-s window / all windows, embeddings averaged per record |
| `split=0.7/0.15/0.15` | patient-level split fractions for tasks without predefined splits |
| `head_init=zeros` | start the head at the constant prediction (default `torch`: nn.Linear's) |
| `min_positives=N` | Dx codes need N train positives to become a class (default 10) |
| `epochs=N` `batch=N` `lr=X` `patience=N` `seed=N` `resamples=N` `max_records=N` | the obvious |

Adding a task is one `TASKS` entry: the TFDS dataset, the label feature, the kind (`binary`,
`multiclass`, `multilabel`, `regression`) and how splits are made (`predefined` TFDS splits, or a
seeded `patient`-level split of the pooled records).

Cost: the probe embeds every record once per model (PTB-XL: 21,799 records, a few minutes per
model on one GPU for Net1D-medium) and fits the head in seconds; fine-tuning trains the whole
backbone for up to `train.max_epochs` epochs (early stopping, patience 5).
"""

from __future__ import annotations

import ml_collections

_PTBXL_CLASSES = {"diagnostic": 44, "subdiagnostic": 23, "superdiagnostic": 5, "form": 19,
                  "rhythm": 12}
_SYNTHETIC = "synthetic_ecg"
_CHALLENGE = "physionet_challenge/first_window"

# name -> task. Fields:
#   dataset: TFDS name[/config] (resolved under `data_dir`).
#   label: the feature (or WFDB header field) holding the target.
#   kind: binary | multiclass | multilabel | regression.
#   split: "predefined" (the dataset's train/validation/test) or "patient" (seeded split of all
#     records by patient id, `split_fractions`).
#   classes: binary/multiclass label values in class order (binary: the second is positive).
#   class_names: display names (default: the values / the dataset's vocabulary).
#   codes: multilabel from a list of codes (Dx); classes = codes with >= min_positives train
#     positives.
#   wfdb: the labels are Challenge header comments, so `wfdb=PATH` can replace the TFDS dataset.
#   unit: regression unit (report only).
TASKS: dict[str, dict[str, object]] = {
    **{f"ptbxl_{name}": dict(dataset="ptbxl/100hz", label=name, kind="multilabel",
                             split="predefined", num_classes=k)
       for name, k in _PTBXL_CLASSES.items()},
    "challenge_dx": dict(dataset=_CHALLENGE, label="dx", kind="multilabel", split="patient",
                         codes=True, min_positives=10, wfdb=True),
    "sex": dict(dataset=_CHALLENGE, label="sex", kind="binary", split="patient",
                classes=("F", "M"), class_names=("female", "male"), wfdb=True),
    "age": dict(dataset=_CHALLENGE, label="age", kind="regression", split="patient",
                unit="years", wfdb=True),
    "demo_sex": dict(dataset=_SYNTHETIC, label="sex", kind="binary", split="predefined",
                     classes=(0, 1), class_names=("female", "male")),
    "demo_age": dict(dataset=_SYNTHETIC, label="age", kind="regression", split="predefined",
                     unit="years"),
    "demo_age_band": dict(dataset=_SYNTHETIC, label="age_band", kind="multiclass",
                          split="predefined", classes=(0, 1, 2, 3, 4),
                          class_names=("40-49", "50-59", "60-69", "70-79", "80-89")),
    "demo_rhythm": dict(dataset=_SYNTHETIC, label="rhythm", kind="multiclass", split="predefined",
                        classes=(0, 1, 2), class_names=("sinus", "af", "ectopic")),
    "demo_risk_high": dict(dataset=_SYNTHETIC, label="risk_high", kind="binary",
                           split="predefined", classes=(0, 1), class_names=("low", "high")),
}
GROUPS: dict[str, tuple[str, ...]] = {
    "ptbxl": tuple(f"ptbxl_{name}" for name in _PTBXL_CLASSES),
    "challenge": ("challenge_dx", "sex", "age"),
    "demo": ("demo_sex", "demo_age", "demo_age_band", "demo_rhythm", "demo_risk_high"),
}
MODES = ("probe", "finetune")
VALUE_OPTIONS = {"mode": str, "data_dir": str, "wfdb": str, "lead": str, "window": int,
                 "windows": str, "split": str, "epochs": int, "batch": int, "lr": float,
                 "patience": int, "seed": int, "resamples": int, "max_records": int,
                 "min_positives": int, "head_init": str}


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


def parse_arg(arg: str | None) -> tuple[list[str], dict[str, object]]:
  """`"sex+age,finetune,window=256"` -> `(["sex", "age"], {"mode": "finetune", "window": 256})`.

  Raises:
    ValueError: one line naming the unknown task/option and the valid ones.
  """
  items = [s.strip() for s in (arg or "").split(",") if s.strip()]
  if not items or "=" in items[0]:
    raise ValueError("configs/eval.py needs a task: configs/eval.py:TASK[+TASK...][,OPTIONS]; "
                     f"tasks: {', '.join(TASKS)}; groups: {', '.join(GROUPS)}.")
  tasks = task_names(items[0])
  options: dict[str, object] = {}
  for item in items[1:]:
    key, sep, value = (s.strip() for s in item.partition("="))
    if not sep:
      if key not in MODES:
        raise ValueError(f"Unknown eval option {key!r}; valid: {', '.join(MODES)}, "
                         f"{', '.join(k + '=' for k in VALUE_OPTIONS)}.")
      options["mode"] = key
      continue
    if key not in VALUE_OPTIONS:
      raise ValueError(f"Unknown eval option {key}=...; valid: "
                       f"{', '.join(k + '=' for k in VALUE_OPTIONS)}.")
    try:
      options[key] = VALUE_OPTIONS[key](value)
    except ValueError:
      raise ValueError(f"Eval option {key}={value!r} is not a valid "
                       f"{VALUE_OPTIONS[key].__name__}.") from None
  if options.get("mode", "probe") not in MODES:
    raise ValueError(f"Unknown mode {options['mode']!r}; choose one of {', '.join(MODES)}.")
  if options.get("windows", "first") not in ("first", "all"):
    raise ValueError(f"windows must be 'first' or 'all'; got {options['windows']!r}.")
  return tasks, options


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The evaluation of `arg`'s tasks with `arg`'s options (module docstring)."""
  tasks, opts = parse_arg(arg)
  config = ml_collections.ConfigDict()
  config.seed = 0                       # Head init, shuffling, random-init baseline.
  config.mode = "probe"                 # "probe" (frozen backbone) | "finetune".

  config.tasks = ml_collections.ConfigDict(sort_keys=False)   # In the order asked for.
  for name in tasks:
    task = {"classes": (), "class_names": (), "codes": False, "min_positives": 0, "wfdb": False,
            "unit": "", "num_classes": 0, **TASKS[name]}
    config.tasks[name] = ml_collections.ConfigDict(task)

  config.data = ml_collections.ConfigDict()
  config.data.data_dir = "~/tensorflow_datasets"
  config.data.wfdb_dir = ""             # Challenge-format WFDB records instead of TFDS.
  config.data.lead = "I"                # Paper: lead I. Released code: lead II (spec §0.6).
  config.data.window = 5000             # Samples per input at 500 Hz (10 s, the contract).
  config.data.windows = "first"         # "all": every 10-s window, embeddings averaged.
  config.data.split_fractions = (0.7, 0.15, 0.15)   # train/validation/test, "patient" tasks.
  config.data.split_seed = 0
  config.data.max_records = 0           # Per TFDS split (or WFDB directory); 0 = all.

  # The head (and in fine-tuning the backbone): spec §E.2 without its schedulers' bugs.
  config.train = ml_collections.ConfigDict()
  config.train.batch_size = 64
  config.train.learning_rate = 1e-3
  config.train.weight_decay = 1e-5      # AdamW (decoupled).
  config.train.max_epochs = 100
  config.train.patience = 5             # Early stopping on validation loss.
  config.train.min_delta = 1e-3
  config.train.regression_loss = "l1"   # On standardised targets, as the released code.
  config.train.standardize_embeddings = True   # Probe: z-score frozen features (train stats).
  # "torch": nn.Linear's default init, as the released code; "zeros": start from the constant
  # prediction (helps when a small train set gives the head only a few steps).
  config.train.head_init = "torch"

  config.bootstrap = ml_collections.ConfigDict({"resamples": 1000, "seed": 0,
                                                "confidence": 0.95})
  # Architecture of the random-init baseline when no --workdir/--compare names one.
  config.model = ml_collections.ConfigDict({"name": "net1d", "size": "small"})
  config.embed_batch_size = 64
  config.plots = True

  if "mode" in opts:
    config.mode = opts["mode"]
  for key, path in (("data_dir", "data_dir"), ("wfdb", "wfdb_dir"), ("lead", "lead"),
                    ("window", "window"), ("windows", "windows"),
                    ("max_records", "max_records")):
    if key in opts:
      config.data[path] = opts[key]
  if "split" in opts:
    try:
      fractions = tuple(float(f) for f in str(opts["split"]).split("/"))
    except ValueError:
      fractions = ()
    if len(fractions) != 3 or min(fractions) <= 0:
      raise ValueError(f"split must be three positive fractions like 0.7/0.15/0.15; "
                       f"got {opts['split']!r}.")
    config.data.split_fractions = fractions
  for key, path in (("epochs", "max_epochs"), ("batch", "batch_size"), ("lr", "learning_rate"),
                    ("patience", "patience")):
    if key in opts:
      config.train[path] = opts[key]
  if "seed" in opts:
    config.seed = opts["seed"]          # The split stays: seeds are compared on one test set.
  if "head_init" in opts:
    config.train.head_init = opts["head_init"]
  if "resamples" in opts:
    config.bootstrap.resamples = opts["resamples"]
  if "min_positives" in opts:
    for name in tasks:
      if config.tasks[name].codes:
        config.tasks[name].min_positives = opts["min_positives"]
  return config
