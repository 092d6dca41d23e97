r"""Downstream evaluation (spec §F): linear probe or fine-tuning, bootstrap intervals, a report.

    python -m clef_jax.evaluate --config=configs/eval.py:sex+age,wfdb=../shared/data/cinc2021 \
        --workdir=/tmp/clef_small_demo --output=/tmp/eval_cinc
    python -m clef_jax.evaluate --config=configs/eval.py:ptbxl,finetune,data_dir=~/tfds \
        --workdir=W --compare=W2 --compare=clef_m=clef_medium.ckpt@medium --output=OUT

Models: `--workdir` (a training workdir, its latest checkpoint) and every `--compare` entry, written
`[LABEL=]PATH[@SIZE]`: a workdir / checkpoint directory, or a PyTorch Net1D file (CLEF `.ckpt`,
state_dict, safetensors) whose size is `@SIZE` or a size named in the file name. A random-init
backbone of the first model's architecture ("random init") is always evaluated too.

Protocol per task (docs/evaluation.md): one lead (default I) through the embed input contract
(`clef_jax.embed.input_contract`: 500 Hz, bandpass, window, z-score); one linear head on the
pooled embedding; `probe` trains the head on frozen embeddings computed once, `finetune` trains
backbone and head. Both: AdamW (lr 1e-3, wd 1e-5), shuffled every epoch, early stopping on the
validation loss (patience 5), best-validation weights for test. Test metrics (`clef_jax.metrics`)
with percentile-bootstrap 95 % intervals over test records (1,000 seeded resamples, the same for
every model, so differences to random init get paired intervals).

Outputs in `--output`: `report.md` (also printed), `report.json`, `report.png`, and
`predictions.npz` (test targets and scores of every model, to recompute any number).

Exit status: 0 done; 1 bad config, missing data or weights (one line on stderr).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import pathlib
import sys
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from clef_jax.data import parsing, schema
from clef_jax import embed
from clef_jax import metrics
from clef_jax import preprocess as pp
from clef_jax import probe

RANDOM_INIT = "random init"
SIZES = ("small", "medium", "large")
TORCH_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".safetensors")
SPLITS = ("train", "validation", "test")
# Primary metric first; `True` = higher is better.
METRICS: dict[str, tuple[tuple[str, str, bool], ...]] = {
    "binary": (("auroc", "AUROC", True),),
    "multiclass": (("macro_auroc", "macro AUROC (one-vs-rest)", True),),
    "multilabel": (("macro_auroc", "macro AUROC", True),),
    "regression": (("mae", "MAE", False), ("rmse", "RMSE", False), ("r2", "R²", True)),
}


def _log(msg: str) -> None:
  print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------
# Records: model inputs (one row per window) and raw labels (one per record).
# ------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Records:
  """Inputs and raw label values of a set of records.

  Attributes:
    x: `(M, window)` float32 model inputs, one row per 10-s window (M >= R).
    owner: `(M,)` int64 record index of each window.
    ids: `(R,)` record ids.
    patients: `(R,)` patient ids (record ids where the data has none).
    splits: `(R,)` predefined split names ("" when the source has none).
    fields: label key -> `(R,)` raw values (str, int, float or code lists; None = missing).
    vocabularies: label key -> class names stored with the dataset (PTB-XL's multi-hot labels).
    source: where the records came from.
    skipped: one line per record that could not be used.
  """

  x: np.ndarray
  owner: np.ndarray
  ids: list[str]
  patients: list[str]
  splits: list[str]
  fields: dict[str, list[Any]]
  vocabularies: dict[str, list[str]]
  source: str
  skipped: list[str]


def lead_windows(x: np.ndarray, fs: float, *, window: int, windows: str = "first") -> np.ndarray:
  """One lead in mV -> `(n, window)` model inputs.

  Args:
    x: `(T,)` signal, NaN = missing.
    fs: its sampling rate.
    window: samples per input at 500 Hz.
    windows: "first": the first window only (`embed.input_contract`); "all": every complete
      non-overlapping window of the record at 500 Hz (at least one: a shorter record gives one
      zero-padded window), each through the same contract.
  """
  if windows == "first":
    return embed.input_contract(x, fs, window=window)[None]
  if windows != "all":
    raise ValueError(f"windows must be 'first' or 'all'; got {windows!r}.")
  x500 = pp.resample(np.asarray(x, np.float64), fs, pp.OFFICIAL_FS)
  n = max(1, x500.shape[0] // window)
  return np.stack([embed.input_contract(x500[k * window:(k + 1) * window], pp.OFFICIAL_FS,
                                        window=window) for k in range(n)])


def _dx_codes(text: str | None) -> list[int]:
  """`"164889003,AF"` -> SNOMED codes, with the Challenge builder's abbreviation table."""
  tokens = [t.strip() for t in (text or "").split(",") if t.strip()]
  if all(t.isdigit() or t.lower() in parsing.MISSING_TOKENS for t in tokens):
    return [int(t) for t in tokens if t.isdigit()]   # The common case: no builder import.
  from clef_jax import build  # Lazy: imports TFDS.

  module = build.dataset_module("physionet_challenge")
  return module.parse_dx(text, module.dx_abbreviations())[0]


def _assemble(chunks: list[np.ndarray], window: int, **kwargs) -> Records:
  owner = np.concatenate([np.full(len(c), i, np.int64) for i, c in enumerate(chunks)]) \
      if chunks else np.zeros(0, np.int64)
  x = np.concatenate(chunks) if chunks else np.zeros((0, window), np.float32)
  return Records(x=x, owner=owner, **kwargs)


def read_wfdb_records(path: str | os.PathLike, *, lead: str, window: int,
                      windows: str = "first", max_records: int = 0) -> Records:
  """Challenge-format WFDB records under `path` (recursive) with their `# Age/Sex/Dx` labels.

  The format has no patient ids, so each record is its own patient. Fields: `sex` ("F"/"M"/None),
  `age` (years, NaN if unknown), `dx` (SNOMED codes).
  """
  root = pathlib.Path(path).expanduser()
  if not root.is_dir():
    raise FileNotFoundError(f"No WFDB directory {root}.")
  headers = sorted(root.rglob("*.hea"), key=lambda p: p.relative_to(root).as_posix())
  if max_records:
    headers = headers[:max_records]
  if not headers:
    raise FileNotFoundError(f"No WFDB records (*.hea) under {root}.")
  schema.lead_index(lead)                   # An unknown lead name fails here, before any reading.
  chunks, ids, fields, skipped = [], [], {"sex": [], "age": [], "dx": []}, []
  for header in headers:
    rid = header.relative_to(root).with_suffix("").as_posix()
    try:
      rec, signal = embed.read_lead(header.with_suffix(""), lead)
    except Exception as e:  # One unreadable record must not stop the others.
      skipped.append(f"{rid}: {e}")
      continue
    comments = parsing.parse_header_comments(rec.comments)
    chunks.append(lead_windows(signal, rec.sampling_rate, window=window, windows=windows))
    ids.append(rid)
    fields["sex"].append(parsing.parse_sex(comments.get("sex"))[0])
    fields["age"].append(parsing.parse_age(comments.get("age"))[0])
    fields["dx"].append(_dx_codes(comments.get("dx")))
  return _assemble(chunks, window, ids=ids, patients=list(ids), splits=[""] * len(ids),
                   fields=fields, vocabularies={}, source=os.fspath(root), skipped=skipped)


def resolve_dataset(dataset: str, data_dir: str | os.PathLike) -> pathlib.Path:
  """TFDS `name[/config]` under `data_dir` -> its newest built version directory.

  `data_dir` may also be a version directory itself (holding `dataset_info.json`). A name
  without a config matches any config, if only one is built (the demo's synthetic archives are
  named after their size).

  Raises:
    FileNotFoundError: with what was looked for.
  """
  root = pathlib.Path(data_dir).expanduser().absolute()
  if (root / "dataset_info.json").is_file():
    return root
  name, _, config_name = dataset.partition("/")
  configs = [root / name / config_name] if config_name else \
      sorted(p for p in (root / name).glob("*") if p.is_dir())
  versions: dict[pathlib.Path, list[pathlib.Path]] = {}
  for c in configs:
    found = [v for v in c.glob("*") if (v / "dataset_info.json").is_file()]
    if found:
      versions[c] = sorted(found, key=lambda v: tuple(int(t) if t.isdigit() else 0
                                                      for t in v.name.split(".")))
  if not versions:
    raise FileNotFoundError(
        f"Dataset {dataset} is not built in {root} (no {root / name}/"
        f"{config_name or '<config>'}/<version>/dataset_info.json). Build it with `python -m "
        f"clef_jax.build {name} ...` (docs/datasets.md) or set data_dir=.")
  if len(versions) > 1:
    raise FileNotFoundError(f"Several builds of {dataset} in {root}: "
                            f"{', '.join(c.name for c in versions)}; point data_dir at one "
                            "version directory.")
  return next(iter(versions.values()))[-1]


def _plain(value: Any) -> Any:
  """A decoded TFDS feature value -> str / int / float / list."""
  if isinstance(value, bytes):
    return value.decode("utf-8", "replace")
  if isinstance(value, np.ndarray):
    return value.tolist() if value.ndim else value.item()
  if isinstance(value, np.generic):
    return value.item()
  return value


def read_tfds_records(version_dir: str | os.PathLike, *, lead: str, window: int,
                      label_keys: Sequence[str], windows: str = "first",
                      max_records: int = 0) -> Records:
  """Every split of a built dataset (`schema.record_features` schema plus `label_keys`).

  Examples sharing a `record_id` within a split (e.g. `physionet_challenge/all_windows`) are
  windows of one record. `max_records` keeps the first examples of each split.
  """
  from tensorflow_datasets.core import read_only_builder  # Lazy: heavy import.

  builder = read_only_builder.builder_from_directory(os.fspath(version_dir))
  missing = [k for k in label_keys if k not in builder.info.features]
  if missing:
    raise KeyError(f"{version_dir} has no feature {', '.join(missing)}.")
  vocabularies = {k: list(v) for k, v in
                  (builder.info.metadata or {}).get("vocabularies", {}).items()}
  j = schema.lead_index(lead)
  chunks: dict[tuple[str, str], list[np.ndarray]] = {}
  info: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}
  skipped = []
  for split in builder.info.splits:
    source = builder.as_data_source(split=split)
    n = len(source) if not max_records else min(max_records, len(source))
    for i in range(n):
      example = source[i]
      rid = _plain(example["record_id"])
      if not example["lead_mask"][j]:
        skipped.append(f"{split}/{rid}: no lead {lead}")
        continue
      x = schema.to_physical(example["signal"][:, j:j + 1], example["gain"][j:j + 1],
                          example["baseline"][j:j + 1])[:, 0]
      key = (split, rid)
      chunks.setdefault(key, []).append(lead_windows(
          x, float(example["sampling_rate"]), window=window, windows=windows))
      if key not in info:
        info[key] = (_plain(example["patient_id"]) or rid,
                     {k: _plain(example[k]) for k in label_keys})
  keys = list(chunks)
  return _assemble([np.concatenate(chunks[k]) for k in keys], window,
                   ids=[k[1] for k in keys], patients=[info[k][0] for k in keys],
                   splits=[k[0] for k in keys],
                   fields={f: [info[k][1][f] for k in keys] for f in label_keys},
                   vocabularies=vocabularies, source=os.fspath(version_dir), skipped=skipped)


# ------------------------------------------------------------------------------------------------
# Splits and targets.
# ------------------------------------------------------------------------------------------------
def patient_split(patients: Sequence[str], *, fractions: Sequence[float] = (0.7, 0.15, 0.15),
                  seed: int = 0) -> np.ndarray:
  """Seeded patient-level split: `(R,)` int in {0 train, 1 validation, 2 test}.

  The sorted unique patient ids are permuted by `np.random.default_rng(seed)` and cut by
  `fractions` (each split gets at least one patient when there are three or more), so no
  patient is in two splits and the split depends only on the set of ids and the seed.
  """
  unique = sorted(set(patients))
  n = len(unique)
  f = np.asarray(fractions, np.float64) / np.sum(fractions)
  n_val = int(round(f[1] * n))
  n_test = int(round(f[2] * n))
  if n >= 3:
    n_val, n_test = max(1, n_val), max(1, n_test)
    n_val = min(n_val, n - n_test - 1)
  order = np.random.default_rng(seed).permutation(n)
  split_of = np.zeros(n, np.int64)
  split_of[order[n - n_val - n_test:n - n_test]] = 1
  split_of[order[n - n_test:]] = 2
  index = {p: split_of[i] for i, p in enumerate(unique)}
  return np.array([index[p] for p in patients], np.int64)


def assign_splits(records: Records, *, mode: str, fractions: Sequence[float],
                  seed: int) -> np.ndarray:
  """`(R,)` split index per record: "predefined" (the dataset's) or "patient" (seeded)."""
  if mode == "patient":
    return patient_split(records.patients, fractions=fractions, seed=seed)
  if mode != "predefined":
    raise ValueError(f"split must be 'predefined' or 'patient'; got {mode!r}.")
  missing = [s for s in SPLITS if s not in set(records.splits)]
  if missing:
    raise ValueError(f"{records.source} has no predefined {'/'.join(missing)} split; use a "
                     "task with split='patient'.")
  return np.array([SPLITS.index(s) if s in SPLITS else -1 for s in records.splits], np.int64)


@dataclasses.dataclass
class Targets:
  """One task's targets: `y` `(R,)` int/float or `(R, K)` multi-hot, `valid` `(R,)` bool."""

  y: np.ndarray
  valid: np.ndarray
  class_names: list[str]


def _dx_names() -> dict[int, str]:
  from clef_jax import build

  path = build.DATASETS_DIR / "physionet_challenge" / "snomed_dx_map.csv"
  if not path.is_file():
    return {}
  with path.open(newline="") as f:
    return {int(r["snomed_code"]): r["abbreviation"] for r in csv.DictReader(f)}


def make_targets(task: Mapping[str, Any], records: Records, split: np.ndarray) -> Targets:
  """Targets of `task` (a `configs/eval.py` TASKS entry) for `records`.

  Records without a usable label are invalid for the task (unknown sex or age, no Dx code, a
  PTB-XL record without any statement of the task). Dx classes are the codes with at least
  `min_positives` positives among the valid train records.
  """
  kind, values = task["kind"], records.fields[task["label"]]
  if kind in ("binary", "multiclass"):
    index = {str(c): i for i, c in enumerate(task["classes"])}
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
    names = _dx_names()
    return Targets(y=y, valid=valid, class_names=[f"{names.get(k, k)} ({k})" for k in classes])
  y = np.array(values, np.uint8)
  if y.ndim != 2:
    raise ValueError(f"Feature {task['label']} is not a multi-hot vector (shape {y.shape}).")
  names = records.vocabularies.get(task["label"]) or [str(k) for k in range(y.shape[1])]
  return Targets(y=y, valid=y.any(axis=1), class_names=list(names))


# ------------------------------------------------------------------------------------------------
# Backbones.
# ------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Backbone:
  """A backbone to evaluate: `model` (linen module) and host `params`."""

  label: str
  name: str
  size: str
  source: str
  model: Any
  params: Any

  def describe(self) -> dict[str, Any]:
    import jax
    n = int(sum(np.prod(np.shape(p)) for p in jax.tree_util.tree_leaves(self.params)))
    return {"source": self.source, "backbone": self.name, "size": self.size, "params": n}


def parse_model_entry(entry: str) -> tuple[str | None, str, str | None]:
  """`"[LABEL=]PATH[@SIZE]"` -> `(label or None, path, size or None)`."""
  label, sep, rest = entry.partition("=")
  if not sep or "/" in label or not label:
    label, rest = None, entry
  path, at, size = rest.rpartition("@")
  if not at or size not in SIZES:
    path, size = rest, None
  return label, path, size


def load_backbone(entry: str, *, backbone: str = "net1d") -> Backbone:
  """A `--workdir`/`--compare` entry -> `Backbone` (weights on the host).

  Directories are training workdirs, `checkpoints/` or step directories (architecture from the
  saved config); files are PyTorch weights of a `backbone` (default Net1D) whose size is given as
  `@SIZE` or appears in the file name (as the released code requires).

  Raises:
    FileNotFoundError, ValueError: unusable entry (the message says why).
  """
  from clef_jax import checkpoint
  from clef_jax import models

  label, path, size = parse_model_entry(entry)
  p = pathlib.Path(path).expanduser()
  if p.is_dir():
    config, params = checkpoint.load_backbone(p)
    name, size = config["model"]["name"], config["model"]["size"]
    label = label or p.absolute().name
  elif p.is_file():
    if size is None:
      named = [s for s in SIZES if s in p.name.lower()]
      if len(named) != 1:
        raise ValueError(f"Size of {p} unknown: write {entry}@small|medium|large.")
      size = named[0]
    name = backbone
    params = checkpoint.load_backbone_torch(p, name=name, size=size)
    label = label or p.stem
  else:
    raise FileNotFoundError(f"No workdir or weight file {p}.")
  return Backbone(label=label, name=name, size=size, source=os.fspath(p.absolute()),
                  model=models.create_backbone(name, size), params=params)


def random_backbone(name: str, size: str, *, seed: int, window: int) -> Backbone:
  """A randomly initialised backbone (the modules' own init distributions)."""
  import jax

  from clef_jax import models
  from clef_jax.models import init as models_init

  model = models.create_backbone(name, size)
  params = jax.device_get(models_init.init_params(model, jax.random.key(seed), (1, window, 1)))
  return Backbone(label=RANDOM_INIT, name=name, size=size, source=f"random init (seed {seed})",
                  model=model, params=params)


# ------------------------------------------------------------------------------------------------
# Training a linear head (probe) or backbone + head (fine-tuning).
# ------------------------------------------------------------------------------------------------
def num_outputs(kind: str, num_classes: int) -> int:
  return num_classes if kind in ("multiclass", "multilabel") else 1


def make_loss(kind: str, regression_loss: str = "l1") -> Callable[..., Any]:
  """`loss(logits (B, K), y, mask (B,)) -> scalar`, the mean over `mask`ed rows.

  BCE-with-logits for binary and multi-label (mean over labels), softmax cross-entropy for
  multiclass, L1 (or "mse") on standardised targets for regression.
  """
  import jax.numpy as jnp
  import optax

  if regression_loss not in ("l1", "mse"):
    raise ValueError(f"regression_loss must be 'l1' or 'mse'; got {regression_loss!r}.")

  def per_example(logits, y):
    if kind == "binary":
      return optax.sigmoid_binary_cross_entropy(logits[:, 0], y.astype(jnp.float32))
    if kind == "multilabel":
      return optax.sigmoid_binary_cross_entropy(logits, y.astype(jnp.float32)).mean(axis=-1)
    if kind == "multiclass":
      return optax.softmax_cross_entropy_with_integer_labels(logits, y.astype(jnp.int32))
    if kind == "regression":
      err = logits[:, 0] - y.astype(jnp.float32)
      return jnp.abs(err) if regression_loss == "l1" else err ** 2
    raise ValueError(f"Unknown task kind {kind!r}.")

  def loss(logits, y, mask):
    mask = mask.astype(jnp.float32)
    return jnp.sum(per_example(logits.astype(jnp.float32), y) * mask) / jnp.maximum(mask.sum(), 1)

  return loss


def init_head(dim: int, outputs: int, seed: int, *, init: str = "torch"
              ) -> dict[str, np.ndarray]:
  """`nn.Linear(dim, outputs)` params: "torch" = PyTorch's default U(+-1/sqrt(dim)) (the
  released code's head), "zeros" = start from the constant prediction (the train mean for
  standardised regression targets, ties for AUROC)."""
  if init == "zeros":
    return {"kernel": np.zeros((dim, outputs), np.float32), "bias": np.zeros(outputs, np.float32)}
  if init != "torch":
    raise ValueError(f"head_init must be 'torch' or 'zeros'; got {init!r}.")
  rng = np.random.default_rng(seed)
  bound = 1.0 / np.sqrt(dim)
  return {"kernel": rng.uniform(-bound, bound, (dim, outputs)).astype(np.float32),
          "bias": rng.uniform(-bound, bound, (outputs,)).astype(np.float32)}


@dataclasses.dataclass
class HeadFns:
  """Jitted `step(params, opt_state, x, y, mask) -> (params, opt_state, loss)` and
  `predict(params, x) -> logits`, shared by every model of one architecture (one compile)."""

  step: Callable[..., Any]
  predict: Callable[..., Any]
  tx: Any


def make_head_fns(logits_fn: Callable[[Any, Any], Any], loss_fn: Callable[..., Any], *,
                  learning_rate: float, weight_decay: float) -> HeadFns:
  """Jits the train step and the forward pass of `logits_fn(params, x) -> (B, K)`."""
  import jax
  import optax

  tx = optax.adamw(learning_rate, weight_decay=weight_decay)

  @jax.jit
  def step(params, opt_state, x, y, mask):
    loss, grads = jax.value_and_grad(lambda p: loss_fn(logits_fn(p, x), y, mask))(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  return HeadFns(step=step, predict=jax.jit(logits_fn), tx=tx)


def predict_batched(fns: HeadFns, params: Any, x: np.ndarray, batch_size: int) -> np.ndarray:
  """Logits of `x` `(N, ...)` in fixed-size batches (the last zero-padded: one compile)."""
  return embed.embed_array(fns.predict, params, x, batch_size=batch_size)


def record_mean(values: np.ndarray, owner: np.ndarray, num_records: int) -> np.ndarray:
  """Mean of the rows of `values` `(M, ...)` per record (`owner` `(M,)`): `(R, ...)`."""
  sums = np.zeros((num_records,) + values.shape[1:], np.float64)
  np.add.at(sums, owner, values)
  counts = np.bincount(owner, minlength=num_records).reshape((-1,) + (1,) * (values.ndim - 1))
  return (sums / np.maximum(counts, 1)).astype(np.float32)


def fit(fns: HeadFns, params: Any, x: np.ndarray, y: np.ndarray, *,
        val_loss: Callable[[Any], float], batch_size: int, max_epochs: int, patience: int,
        min_delta: float, seed: int) -> tuple[Any, dict[str, Any]]:
  """Trains `params` on `(x, y)` with early stopping; returns the best-validation params.

  Every epoch visits the train rows in a fresh seeded order (`default_rng([seed, epoch])`), in
  batches of `batch_size` (the last one padded and masked: one compiled shape). After each
  epoch, `val_loss(params)` decides: training stops when it has not improved by `min_delta` for
  `patience` epochs (Lightning's EarlyStopping), and the params of the lowest validation loss
  are returned (its ModelCheckpoint).

  Returns:
    `(best params, {"epochs", "best_epoch", "best_val_loss", "history": [...]})`.
  """
  import jax

  n = len(x)
  bs = max(1, min(batch_size, n))
  steps = -(-n // bs)
  opt_state = fns.tx.init(params)
  best_params, best_loss, best_epoch = params, float("inf"), 0
  stop_ref, bad, history = float("inf"), 0, []
  for epoch in range(1, max_epochs + 1):
    order = np.random.default_rng([seed, epoch]).permutation(n)
    order = np.concatenate([order, np.zeros(steps * bs - n, np.int64)])
    mask = (np.arange(steps * bs) < n).astype(np.float32)
    losses = []
    for s in range(steps):
      idx = order[s * bs:(s + 1) * bs]
      params, opt_state, loss = fns.step(params, opt_state, x[idx], y[idx],
                                         mask[s * bs:(s + 1) * bs])
      losses.append(loss)
    train_loss = float(np.mean(jax.device_get(losses)))
    current = float(val_loss(params))
    history.append({"epoch": epoch, "train_loss": train_loss, "val_loss": current})
    if not np.isfinite(current):
      break
    if current < best_loss:
      best_params, best_loss, best_epoch = params, current, epoch
    if current < stop_ref - min_delta:
      stop_ref, bad = current, 0
    else:
      bad += 1
      if bad >= patience:
        break
  return best_params, {"epochs": len(history), "best_epoch": best_epoch,
                       "best_val_loss": best_loss, "history": history}


def _val_loss(loss_fn: Callable[..., Any], logits: np.ndarray, y: np.ndarray) -> float:
  import jax.numpy as jnp
  return float(loss_fn(jnp.asarray(logits), jnp.asarray(y), jnp.ones(len(logits))))


def probe_head(fns: HeadFns, loss_fn: Callable[..., Any], z: np.ndarray, y: np.ndarray,
               rows: Mapping[str, np.ndarray], *, outputs: int, seed: int, head_init: str,
               **fit_kwargs: Any) -> tuple[np.ndarray, dict[str, Any]]:
  """Linear probing: a head on frozen record embeddings `z` `(R, D)`.

  Args:
    fns: `make_head_fns` of the linear map `z @ kernel + bias`.
    loss_fn: `make_loss` of the task.
    z: `(R, D)` embeddings of every record.
    y: `(R, ...)` training targets (standardised for regression).
    rows: split name -> record indices.
    outputs: head outputs.
    seed: head init and shuffling seed.
    head_init: `init_head`'s `init`.
    **fit_kwargs: `fit`'s batch_size, max_epochs, patience, min_delta.

  Returns:
    `(test logits (R_test, K), fit summary)`.
  """
  val = rows["validation"]
  params, summary = fit(
      fns, init_head(z.shape[1], outputs, seed, init=head_init), z[rows["train"]],
      y[rows["train"]], val_loss=lambda p: _val_loss(
          loss_fn, predict_batched(fns, p, z[val], 4096), y[val]), seed=seed, **fit_kwargs)
  return predict_batched(fns, params, z[rows["test"]], 4096), summary


def backbone_logits_fn(model) -> Callable[[Any, Any], Any]:
  """`logits(params, x (B, L)) -> (B, K)`: the backbone's pooled embedding through the head,
  with `params = {"backbone": ..., "head": {"kernel", "bias"}}`."""

  def logits(params, x):
    emb, _ = model.apply({"params": params["backbone"]}, x[..., None], train=True)
    return emb @ params["head"]["kernel"] + params["head"]["bias"]

  return logits


def finetune(fns: HeadFns, loss_fn: Callable[..., Any], backbone: Backbone, records: Records,
             y: np.ndarray, rows: Mapping[str, np.ndarray], *, outputs: int, seed: int,
             head_init: str, **fit_kwargs: Any) -> tuple[np.ndarray, dict[str, Any]]:
  """Full fine-tuning of `backbone` + a linear head on `records`' windows.

  The windows of the train records are the training examples, each with its record's target.
  Validation and test logits are averaged over each record's windows, which for a linear head
  equals the head applied to the mean embedding (the probe's `windows=all` rule).

  Returns:
    `(test logits (R_test, K), fit summary)`.
  """
  num_records = len(records.ids)
  win = {s: np.flatnonzero(np.isin(records.owner, r)) for s, r in rows.items()}

  def split_logits(params, split):
    out = predict_batched(fns, params, records.x[win[split]], fit_kwargs["batch_size"])
    return record_mean(out, records.owner[win[split]], num_records)[rows[split]]

  params = {"backbone": backbone.params,
            "head": init_head(backbone.model.features, outputs, seed, init=head_init)}
  params, summary = fit(
      fns, params, records.x[win["train"]], y[records.owner[win["train"]]],
      val_loss=lambda p: _val_loss(loss_fn, split_logits(p, "validation"), y[rows["validation"]]),
      seed=seed, **fit_kwargs)
  return split_logits(params, "test"), summary


# ------------------------------------------------------------------------------------------------
# Metrics of one task.
# ------------------------------------------------------------------------------------------------
def metric_scores(kind: str, logits: np.ndarray, *, y_mean: float = 0.0,
                y_std: float = 1.0) -> np.ndarray:
  """Logits -> what the metrics rank or compare: binary logit, multi-label logits, multiclass
  softmax probabilities (as sklearn's one-vs-rest AUROC), regression in original units."""
  logits = np.asarray(logits, np.float64)
  if kind == "binary":
    return logits[:, 0]
  if kind == "multiclass":
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)
  if kind == "regression":
    return logits[:, 0] * y_std + y_mean
  return logits


def metric_fn(kind: str, metric: str, y: np.ndarray, scores: np.ndarray
              ) -> Callable[[np.ndarray | None], Any]:
  """`fn(weights)` of one metric (see `metrics.bootstrap`)."""
  fns = {"auroc": metrics.auroc, "mae": metrics.mae, "rmse": metrics.rmse, "r2": metrics.r2,
         "macro_auroc": metrics.ovr_macro_auroc if kind == "multiclass" else metrics.macro_auroc}
  f = fns[metric]
  return lambda w: f(y, scores, w)


def undefined_in(kind: str, y: np.ndarray, class_names: Sequence[str]) -> list[str]:
  """Names of the classes whose AUROC is undefined on `y` (no positives or no negatives)."""
  if kind == "multiclass":
    y = np.eye(len(class_names), dtype=bool)[y]
  elif kind != "multilabel":
    return []
  return [class_names[k] for k in metrics.undefined_classes(y)]


# ------------------------------------------------------------------------------------------------
# The evaluation.
# ------------------------------------------------------------------------------------------------
def _data_key(task: Mapping[str, Any], data: Mapping[str, Any]) -> tuple[str, str]:
  if data["wfdb_dir"]:
    if not task["wfdb"]:
      raise ValueError(f"Task on {task['dataset']} cannot read WFDB records (wfdb=); use "
                       "data_dir=.")
    return ("wfdb", data["wfdb_dir"])
  return ("tfds", task["dataset"])


def _load_records(key: tuple[str, str], label_keys: Sequence[str], data: Mapping[str, Any]
                  ) -> Records:
  kind, where = key
  common = dict(lead=data["lead"], window=data["window"], windows=data["windows"],
                max_records=data["max_records"])
  if kind == "wfdb":
    return read_wfdb_records(where, **common)
  return read_tfds_records(resolve_dataset(where, data["data_dir"]), label_keys=label_keys,
                           **common)


def evaluate(config: Mapping[str, Any], backbones: Sequence[Backbone]) -> dict[str, Any]:
  """Runs every task of `config` (configs/eval.py) on every backbone.

  Args:
    config: the evaluation config (`ConfigDict` or plain dict).
    backbones: models to compare; the first is the reference of the paired differences
      (normally the random init).

  Returns:
    The report: protocol, models, and per task the split sizes, classes, per-model training
    summaries and metrics with intervals (all JSON-serialisable), plus `predictions` (test ids,
    targets and per-model scores as arrays; `write_report` saves them to `predictions.npz`).
  """
  data, train_cfg, boot = config["data"], config["train"], config["bootstrap"]
  mode = config["mode"]
  if mode not in ("probe", "finetune"):
    raise ValueError(f"mode must be 'probe' or 'finetune'; got {mode!r}.")
  labels = [b.label for b in backbones]
  if len(set(labels)) != len(labels):
    raise ValueError(f"Model labels must be unique; got {labels} (name them LABEL=PATH).")
  report: dict[str, Any] = {
      "protocol": {
          "mode": mode, "lead": data["lead"], "window": data["window"],
          "windows": data["windows"], "seed": config["seed"],
          "split_fractions": list(data["split_fractions"]), "split_seed": data["split_seed"],
          "train": dict(train_cfg), "bootstrap": dict(boot)},
      "models": {b.label: b.describe() for b in backbones},
      "tasks": {},
      # Test-set targets and scores (saved as predictions.npz, not in the JSON).
      "predictions": {},
  }
  tasks = {name: dict(t) for name, t in config["tasks"].items()}
  groups: dict[tuple[str, str], list[str]] = {}
  for name, task in tasks.items():
    groups.setdefault(_data_key(task, data), []).append(name)
  embed_fns: dict[tuple[str, str], Any] = {}

  for key, names in groups.items():
    start = time.monotonic()
    records = _load_records(key, sorted({tasks[n]["label"] for n in names}), data)
    num_records = len(records.ids)
    _log(f"data: {records.source}: {num_records} records, {len(records.x)} windows "
         f"({len(records.skipped)} skipped, {time.monotonic() - start:.0f} s)")
    split_modes = {tasks[n]["split"] for n in names}
    splits_by_mode = {m: assign_splits(records, mode=m, fractions=data["split_fractions"],
                                       seed=data["split_seed"]) for m in split_modes}

    # Embeddings once per backbone (probe mode): window rows -> record means.
    embeddings: dict[str, np.ndarray] = {}
    if mode == "probe":
      for b in backbones:
        arch = (b.name, b.size)
        if arch not in embed_fns:
          embed_fns[arch] = embed.make_embed_fn(b.model)
        t0 = time.monotonic()
        z = embed.embed_array(embed_fns[arch], b.params, records.x,
                              batch_size=config["embed_batch_size"])
        embeddings[b.label] = record_mean(z, records.owner, num_records)
        _log(f"embed: {b.label}: {embeddings[b.label].shape} ({time.monotonic() - t0:.0f} s)")

    for name in names:
      task = tasks[name]
      split = splits_by_mode[task["split"]]
      targets = make_targets(task, records, split)
      kind = task["kind"]
      rows = {s: np.flatnonzero((split == i) & targets.valid) for i, s in enumerate(SPLITS)}
      empty = [s for s in SPLITS if not len(rows[s])]
      if empty:
        raise ValueError(f"Task {name}: no usable records in the {'/'.join(empty)} split "
                         f"({records.source}); more records or other split fractions needed.")
      y = targets.y
      y_mean = y_std = None
      if kind == "regression":
        y_mean = float(y[rows["train"]].mean())
        y_std = float(y[rows["train"]].std()) or 1.0
        y_fit = ((y - y_mean) / y_std).astype(np.float32)
      else:
        y_fit = y
      k_out = num_outputs(kind, len(targets.class_names))
      loss_fn = make_loss(kind, train_cfg["regression_loss"])
      y_test = y[rows["test"]]
      task_report: dict[str, Any] = {
          "kind": kind, "label": task["label"], "data": records.source,
          "split": task["split"], "n": {s: int(len(rows[s])) for s in SPLITS},
          "unit": task["unit"], "classes": targets.class_names,
          "undefined_in_test": undefined_in(kind, y_test, targets.class_names),
          "training": {}, "metrics": {}}
      scores: dict[str, np.ndarray] = {}
      head_fns: dict[Any, HeadFns] = {}      # One compile per feature size / architecture.
      fit_kwargs = dict(outputs=k_out, seed=config["seed"], head_init=train_cfg["head_init"],
                        batch_size=train_cfg["batch_size"], max_epochs=train_cfg["max_epochs"],
                        patience=train_cfg["patience"], min_delta=train_cfg["min_delta"])
      for b in backbones:
        t0 = time.monotonic()
        if mode == "probe":
          z = embeddings[b.label]
          if train_cfg["standardize_embeddings"]:
            z = probe.standardize(z[rows["train"]], z)[1].astype(np.float32)
          if z.shape[1] not in head_fns:
            head_fns[z.shape[1]] = make_head_fns(
                lambda p, x: x @ p["kernel"] + p["bias"], loss_fn,
                learning_rate=train_cfg["learning_rate"], weight_decay=train_cfg["weight_decay"])
          logits, summary = probe_head(head_fns[z.shape[1]], loss_fn, z, y_fit, rows,
                                       **fit_kwargs)
        else:
          arch = (b.name, b.size)
          if arch not in head_fns:
            head_fns[arch] = make_head_fns(
                backbone_logits_fn(b.model), loss_fn, learning_rate=train_cfg["learning_rate"],
                weight_decay=train_cfg["weight_decay"])
          logits, summary = finetune(head_fns[arch], loss_fn, b, records, y_fit, rows,
                                     **fit_kwargs)
        scores[b.label] = metric_scores(kind, logits, y_mean=y_mean or 0.0, y_std=y_std or 1.0)
        summary["seconds"] = round(time.monotonic() - t0, 2)
        task_report["training"][b.label] = summary
        _log(f"{name}: {b.label}: {summary['epochs']} epochs, best {summary['best_epoch']} "
             f"(val loss {summary['best_val_loss']:.4f}, {summary['seconds']:.0f} s)")
      for metric, _, _ in METRICS[kind]:
        task_report["metrics"][metric] = metrics.bootstrap(
            {label: metric_fn(kind, metric, y_test, s) for label, s in scores.items()},
            len(y_test), num_resamples=boot["resamples"], seed=boot["seed"],
            confidence=boot["confidence"], paired_with=backbones[0].label)
      report["tasks"][name] = task_report
      report["predictions"][name] = {"ids": [records.ids[i] for i in rows["test"]],
                                     "y": y_test, "scores": scores}
  return report


# ------------------------------------------------------------------------------------------------
# Report: markdown, JSON, PNG.
# ------------------------------------------------------------------------------------------------
def _fmt(value: float) -> str:
  return "n/a" if value is None or not np.isfinite(value) else f"{value:.3f}"


def format_markdown(report: Mapping[str, Any]) -> str:
  """A row per (task, metric), a column per model: `value [low, high]`; then the paired
  differences to the first model, and the classes without a test AUROC."""
  models = list(report["models"])
  proto = report["protocol"]
  conf = int(round(100 * proto["bootstrap"]["confidence"]))
  head = ["task", "metric", "n test"] + models
  rows, deltas, notes = [], [], []
  for name, task in report["tasks"].items():
    unit = f" ({task['unit']})" if task["unit"] else ""
    for metric, title, higher in METRICS[task["kind"]]:
      results = task["metrics"][metric]
      arrow = "↑" if higher else "↓"
      if metric in ("auroc", "macro_auroc", "r2"):
        unit_text = ""
      else:
        unit_text = unit
      rows.append([name, f"{title}{unit_text} {arrow}", str(task["n"]["test"])] + [
          f"{_fmt(results[m]['value'])} [{_fmt(results[m]['low'])}, {_fmt(results[m]['high'])}]"
          for m in models])
      deltas.append([name, f"{title}{unit_text}"] + [
          f"{results[m]['delta']:+.3f} [{results[m]['delta_low']:+.3f}, "
          f"{results[m]['delta_high']:+.3f}]" if np.isfinite(results[m].get("delta_low", np.nan))
          else "n/a" for m in models[1:]])
    if task["undefined_in_test"]:
      notes.append(f"- {name}: no test AUROC for {len(task['undefined_in_test'])} of "
                   f"{len(task['classes'])} classes (no positives or no negatives in the test "
                   f"set; left out of the macro): {', '.join(task['undefined_in_test'])}")

  def table(header, body):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(r) + " |" for r in body]

  protocol = ("frozen backbone, linear head" if proto["mode"] == "probe"
              else "backbone + linear head trained")
  lines = [f"Downstream evaluation: {proto['mode']} ({protocol}), "
           f"lead {proto['lead']}, {proto['window']}-sample window"
           f"{', all windows averaged' if proto['windows'] == 'all' else ''}; "
           f"point estimate [{conf} % bootstrap interval, {proto['bootstrap']['resamples']} "
           f"resamples over test records].", ""]
  lines += table(head, rows)
  if len(models) > 1:
    lines += ["", f"Difference to {models[0]} (paired bootstrap, same resamples):", ""]
    lines += table(["task", "metric"] + models[1:], deltas)
  lines += ["", "Models: " + "; ".join(
      f"{m}: {d['backbone']}-{d['size']} ({d['params']:,} params) from {d['source']}"
      for m, d in report["models"].items())]
  split_text = "; ".join(
      f"{n}: {t['n']['train']}/{t['n']['validation']}/{t['n']['test']} ({t['split']}"
      + (f", {len(t['classes'])} classes" if t["kind"] == "multilabel" else "") + ")"
      for n, t in report["tasks"].items())
  lines += [f"Records train/validation/test: {split_text}."]
  if notes:
    lines += [""] + notes
  return "\n".join(lines) + "\n"


def plot_report(report: Mapping[str, Any], path: str | os.PathLike) -> None:
  """Bar chart: one panel per (task, primary metric), a bar per model with its interval."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  models = list(report["models"])
  panels = [(name, *METRICS[task["kind"]][0]) for name, task in report["tasks"].items()]
  cols = min(4, len(panels))
  nrows = -(-len(panels) // cols)
  fig, axes = plt.subplots(nrows, cols, figsize=(3.2 * cols + 0.4, 3.0 * nrows), squeeze=False)
  colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
  for ax, (name, metric, title, higher) in zip(axes.ravel(), panels):
    results = report["tasks"][name]["metrics"][metric]
    values = np.array([results[m]["value"] for m in models], np.float64)
    low = np.array([results[m]["low"] for m in models], np.float64)
    high = np.array([results[m]["high"] for m in models], np.float64)
    err = np.nan_to_num(np.stack([values - low, high - values]).clip(min=0))
    ax.bar(range(len(models)), np.nan_to_num(values), yerr=err, capsize=4,
           color=[colors[i % len(colors)] for i in range(len(models))])
    if metric in ("auroc", "macro_auroc"):
      ax.axhline(0.5, color="grey", lw=0.8, ls="--")
      ax.set_ylim(0.0, 1.0)
    unit = report["tasks"][name]["unit"]
    ax.set_title(f"{name}\n{title}{' (' + unit + ')' if unit and metric in ('mae', 'rmse') else ''}"
                 f" {'↑' if higher else '↓'}", fontsize=9)
    ax.set_xticks(range(len(models)))
    ax.set_xticklabels(models, rotation=20, ha="right", fontsize=8)
  for ax in axes.ravel()[len(panels):]:
    ax.axis("off")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def _json_safe(value: Any) -> Any:
  """NaN/inf -> None (strict JSON), recursively."""
  if isinstance(value, float):
    return value if np.isfinite(value) else None
  if isinstance(value, dict):
    return {k: _json_safe(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_json_safe(v) for v in value]
  return value


def write_report(report: Mapping[str, Any], output: str | os.PathLike, *,
                 plots: bool = True) -> str:
  """Writes `report.md`, `report.json`, `predictions.npz` (and `report.png`) into `output`.

  `predictions.npz` holds, per task, `<task>/ids` (test record ids), `<task>/y` (targets) and
  `<task>/scores/<model>` (what the metrics were computed from), so every number in the report
  can be recomputed.

  Returns:
    The markdown table.
  """
  out = pathlib.Path(output)
  out.mkdir(parents=True, exist_ok=True)
  text = format_markdown(report)
  (out / "report.md").write_text(text)
  summary = {k: v for k, v in report.items() if k != "predictions"}
  (out / "report.json").write_text(json.dumps(_json_safe(summary), indent=2, allow_nan=False)
                                   + "\n")
  arrays = {}
  for task, pred in report.get("predictions", {}).items():
    arrays[f"{task}/ids"] = np.asarray(pred["ids"], dtype=str)
    arrays[f"{task}/y"] = np.asarray(pred["y"])
    for label, scores in pred["scores"].items():
      arrays[f"{task}/scores/{label}"] = np.asarray(scores)
  np.savez(out / "predictions.npz", **arrays)
  if plots:
    plot_report(report, out / "report.png")
  return text


def run(config: Mapping[str, Any], *, workdir: str | None = None, compare: Sequence[str] = (),
        output: str | os.PathLike) -> dict[str, Any]:
  """Loads the models, evaluates them with a random-init baseline, writes and prints the report.

  Args:
    config: configs/eval.py config.
    workdir: main model (workdir or `[LABEL=]PATH[@SIZE]`), or None.
    compare: further model entries.
    output: report directory.
  """
  entries = ([workdir] if workdir else []) + list(compare)
  loaded = [load_backbone(e) for e in entries]
  name, size = (loaded[0].name, loaded[0].size) if loaded else (config["model"]["name"],
                                                                 config["model"]["size"])
  baseline = random_backbone(name, size, seed=config["seed"], window=config["data"]["window"])
  report = evaluate(config, [baseline] + loaded)
  text = write_report(report, output, plots=config["plots"])
  print(text, flush=True)
  return report


# ------------------------------------------------------------------------------------------------
# CLI.
# ------------------------------------------------------------------------------------------------
def _main_cli() -> None:
  from absl import app
  from absl import flags
  from absl import logging as absl_logging
  from ml_collections import config_flags

  config_flag = config_flags.DEFINE_config_file(
      "config", None, "configs/eval.py:TASKS[,OPTIONS], e.g. configs/eval.py:sex+age,wfdb=DIR.",
      lock_config=True)
  workdir_flag = flags.DEFINE_string("workdir", None, "Model to evaluate: a training workdir "
                                     "(or [LABEL=]PATH[@SIZE], see --compare).")
  compare_flag = flags.DEFINE_multi_string(
      "compare", [], "More models, [LABEL=]PATH[@SIZE]: workdirs / checkpoint dirs, or PyTorch "
      "Net1D files (size from @SIZE or the file name).")
  output_flag = flags.DEFINE_string("output", None, "Report directory.")
  flags.mark_flags_as_required(["config", "output"])

  def parse(argv):
    try:
      return flags.FLAGS(argv)
    except Exception as e:  # Flag and config-file errors: one line, no traceback.
      lines = [l.strip() for l in str(e).splitlines() if l.strip()] or [repr(e)]
      print(f"error: {lines[-1]}", file=sys.stderr, flush=True)
      sys.exit(1)

  def main(argv):
    if len(argv) > 1:
      raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    absl_logging.set_verbosity(absl_logging.ERROR)   # Orbax/TFDS notes off the console.
    try:
      config = config_flag.value
      config.get("mode")            # A config file that failed to load raises when first used.
      run(config, workdir=workdir_flag.value, compare=compare_flag.value,
          output=output_flag.value)
    except (FileNotFoundError, ValueError, KeyError, OSError) as e:
      print(f"error: {e.args[0] if e.args else e}", file=sys.stderr, flush=True)
      sys.exit(1)

  app.run(main, flags_parser=parse)


if __name__ == "__main__":
  _main_cli()
