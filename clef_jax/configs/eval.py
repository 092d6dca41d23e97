r"""Downstream evaluation (docs/method.md §F): tasks, protocol and report options as a `ConfigDict`.

    python -m clef_jax.evaluate --config=configs/eval.py:TASKS[,OPTIONS] --model_workdir=W \
        [--compare=W2 --torch_weights=clef_m=clef_medium.ckpt@medium ...] --output=OUT

TASKS is one task or several joined by `+` (or a group name), e.g.

    configs/eval.py:paper,data_dir=~/tfds                   the paper's 18 tasks on its 7 datasets
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
| `head=ridge` | closed-form ridge probe instead of the AdamW-trained head (default `adamw`) |
| `labels=F` | train on a fraction F of each task's training labels (0.01, 0.1, 1; fixed seed) |
| `reference=LABEL` | the model the cross-task averages compare against (default the random init) |
| `lvef=CONFIG` | the `mimic_iv_lvef` build config the LVEF tasks read (default: the one built) |
| `embed_batch=N` | records per embedding batch (default 64); datasets with at least N records share one compiled shape |
| `epochs=N` `batch=N` `lr=X` `patience=N` `seed=N` `resamples=N` `max_records=N` | the obvious |

Tasks and groups are the registry `clef_jax.evaluation.tasks.TASKS` (adding a task is one `Task`
entry there: the TFDS dataset, the label feature, the kind, the split); `python -m
clef_jax.evaluate --list_tasks` prints them. Groups: `paper` (the paper's 18 tasks) and one per
dataset: `ptbxl`, `chapman`, `icentia11k`, `mc_med`, `mimic_iv_lvef`, `music_scd`, `aurora_bp`
(plus `challenge` and `demo`). This file holds only the protocol's settings.

Cost: the probe embeds every record once per model (PTB-XL: 21,799 records, a few minutes per
model on one GPU for Net1D-medium) and fits the head in seconds; fine-tuning trains the whole
backbone for up to `train.max_epochs` epochs (early stopping, patience 5).
"""

from __future__ import annotations

import ml_collections

from clef_jax import options
from clef_jax.evaluation import tasks

MODES = ("probe", "finetune")
VALUE_OPTIONS = {
  "mode": str,
  "data_dir": str,
  "wfdb": str,
  "lead": str,
  "window": int,
  "windows": str,
  "split": str,
  "epochs": int,
  "batch": int,
  "lr": float,
  "patience": int,
  "seed": int,
  "resamples": int,
  "max_records": int,
  "min_positives": int,
  "head_init": str,
  "head": str,
  "labels": float,
  "reference": str,
  "lvef": str,
  "embed_batch": int,
}
LVEF_CONFIGS = ("csv_class", "lvef_lt_50", "lvef_lt_40")


def parse_arg(arg: str | None) -> tuple[list[str], dict[str, object]]:
  """`"sex+age,finetune,window=256"` -> `(["sex", "age"], {"mode": "finetune", "window": 256})`.

  Raises:
    ValueError: one line naming the unknown task/option and the valid ones.
  """
  items = options.split_items(arg)
  if not items or "=" in items[0]:
    raise ValueError(
      "configs/eval.py needs a task: configs/eval.py:TASK[+TASK...][,OPTIONS]; "
      f"tasks: {', '.join(tasks.TASKS)}; groups: {', '.join(tasks.GROUPS)}."
    )
  opts = options.parse_options(
    items[1:], choices={"mode": MODES}, values=VALUE_OPTIONS, what="eval"
  )
  if opts.get("windows", "first") not in ("first", "all"):
    raise ValueError(f"windows must be 'first' or 'all'; got {opts['windows']!r}.")
  return tasks.task_names(items[0]), opts


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The evaluation of `arg`'s tasks with `arg`'s options (module docstring)."""
  names, opts = parse_arg(arg)
  config = ml_collections.ConfigDict()
  config.seed = 0  # Head init, shuffling, random-init baseline.
  config.mode = "probe"  # "probe" (frozen backbone) | "finetune".

  config.tasks = ml_collections.ConfigDict(sort_keys=False)  # In the order asked for.
  for name in names:
    config.tasks[name] = ml_collections.ConfigDict(tasks.TASKS[name].as_config())

  config.data = ml_collections.ConfigDict()
  config.data.data_dir = "~/tensorflow_datasets"
  config.data.wfdb_dir = ""  # Challenge-format WFDB records instead of TFDS.
  config.data.lead = "I"  # Paper: lead I. Released code: lead II (docs/method.md §0.6).
  config.data.window = 5000  # Samples per input at 500 Hz (10 s, the contract).
  config.data.windows = "first"  # "all": every 10-s window, embeddings averaged.
  config.data.split_fractions = (0.7, 0.15, 0.15)  # train/validation/test, "patient" tasks.
  config.data.split_seed = 0
  config.data.max_records = 0  # Per TFDS split (or WFDB directory); 0 = all.
  config.data.crop_seed = 0  # Tasks with crop="random": the per-record crop start.

  # The head (and in fine-tuning the backbone): docs/method.md §E.2 without its schedulers' bugs.
  config.train = ml_collections.ConfigDict()
  config.train.batch_size = 64
  config.train.learning_rate = 1e-3
  config.train.weight_decay = 1e-5  # AdamW (decoupled).
  config.train.max_epochs = 100
  config.train.patience = 5  # Early stopping on validation loss.
  config.train.min_delta = 1e-3
  config.train.regression_loss = "l1"  # On standardised targets, as the released code.
  config.train.standardize_embeddings = True  # Probe: z-score frozen features (train stats).
  # "torch": nn.Linear's default init, as the released code; "zeros": start from the constant
  # prediction (helps when a small train set gives the head only a few steps).
  config.train.head_init = "torch"
  # "adamw": the head above, trained with early stopping (the paper's protocol); "ridge": the
  # closed-form ridge probe (frozen embeddings only; L2 picked on the validation split).
  config.train.head = "adamw"
  # Fraction of each task's training records whose labels are used (1 = all); the subset is
  # drawn with `label_seed` (at least one record of every class present, for classification).
  config.train.label_fraction = 1.0
  config.train.label_seed = 0

  config.bootstrap = ml_collections.ConfigDict({"resamples": 1000, "seed": 0, "confidence": 0.95})
  # Architecture of the random-init baseline when no --workdir/--compare names one.
  config.model = ml_collections.ConfigDict({"name": "net1d", "size": "small"})
  config.embed_batch_size = 64
  # "cache": the command re-runs itself once with clef_jax.allocator's caching allocator
  # preloaded (XLA:CPU's per-step buffers stay mapped; Linux/glibc, a C compiler); "system":
  # glibc's malloc. Only CPU runs are affected.
  config.host_allocator = "cache"
  config.plots = True
  # The model the paper-format averages (mean AUROC, mean relative MAE change) compare against;
  # "" = the first model (the random init the CLI always adds).
  config.reference = ""

  if "mode" in opts:
    config.mode = opts["mode"]
  for key, path in (
    ("data_dir", "data_dir"),
    ("wfdb", "wfdb_dir"),
    ("lead", "lead"),
    ("window", "window"),
    ("windows", "windows"),
    ("max_records", "max_records"),
  ):
    if key in opts:
      config.data[path] = opts[key]
  if "split" in opts:
    try:
      fractions = tuple(float(f) for f in str(opts["split"]).split("/"))
    except ValueError:
      fractions = ()
    if len(fractions) != 3 or min(fractions) <= 0:
      raise ValueError(
        f"split must be three positive fractions like 0.7/0.15/0.15; got {opts['split']!r}."
      )
    config.data.split_fractions = fractions
  for key, path in (
    ("epochs", "max_epochs"),
    ("batch", "batch_size"),
    ("lr", "learning_rate"),
    ("patience", "patience"),
  ):
    if key in opts:
      config.train[path] = opts[key]
  if "seed" in opts:
    config.seed = opts["seed"]  # The split stays: seeds are compared on one test set.
  if "head_init" in opts:
    config.train.head_init = opts["head_init"]
  if "head" in opts:
    config.train.head = opts["head"]
  if "resamples" in opts:
    config.bootstrap.resamples = opts["resamples"]
  if "embed_batch" in opts:
    if opts["embed_batch"] < 1:
      raise ValueError(f"embed_batch must be >= 1; got {opts['embed_batch']}.")
    config.embed_batch_size = opts["embed_batch"]
  if "labels" in opts:
    if not 0 < opts["labels"] <= 1:
      raise ValueError(f"labels must be a fraction in (0, 1] (0.01 = 1 %); got {opts['labels']}.")
    config.train.label_fraction = opts["labels"]
  if "reference" in opts:
    config.reference = opts["reference"]
  if "lvef" in opts:
    if opts["lvef"] not in LVEF_CONFIGS:
      raise ValueError(f"lvef must be one of {', '.join(LVEF_CONFIGS)}; got {opts['lvef']!r}.")
    for name in names:
      if config.tasks[name].dataset.partition("/")[0] == "mimic_iv_lvef":
        config.tasks[name].dataset = f"mimic_iv_lvef/{opts['lvef']}"
  if "min_positives" in opts:
    for name in names:
      if config.tasks[name].codes:
        config.tasks[name].min_positives = opts["min_positives"]
  return config
