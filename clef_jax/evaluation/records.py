"""Evaluation records: one lead of every record as model inputs, the raw labels, the splits.

A task's records come from a built TFDS dataset (`read_tfds_records`, any dataset with the shared
`clef_jax.data.schema.record_features` schema) or straight from Challenge-format WFDB records
(`read_wfdb_records`). Each record gives one or more 10-s windows through the models' input
contract (`clef_jax.model_inputs.input_contract`); splits are the dataset's published ones or a
seeded patient-level split (`patient_split`).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from clef_jax import model_inputs, readers
from clef_jax import preprocess as pp
from clef_jax.data import built, dx, parsing, schema
from clef_jax.data.signal import resample

SPLITS = ("train", "validation", "test")


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


@dataclasses.dataclass(frozen=True)
class InputSpec:
  """How one lead becomes model inputs (a task's input protocol, docs/evaluation.md).

  Attributes:
    window: samples per input at 500 Hz.
    windows: "first": one input per record; "all": every complete non-overlapping window of
      the record at 500 Hz (at least one: a shorter record gives one zero-padded window).
    bandpass: the input contract's 0.67-40 Hz band-pass.
    normalize: the input contract's per-input z-score.
    crop: "start" (the first `window` samples) or "random" (a random start, drawn per record
      from `crop_seed` and the record id, so every model and run sees the same crop).
    crop_seed: see `crop`.
  """

  window: int
  windows: str = "first"
  bandpass: bool = True
  normalize: bool = True
  crop: str = "start"
  crop_seed: int = 0


def lead_windows(
  x: np.ndarray,
  fs: float,
  *,
  window: int,
  windows: str = "first",
  bandpass: bool = True,
  normalize: bool = True,
  crop: str = "start",
  crop_seed: int = 0,
  record_id: str = "",
) -> np.ndarray:
  """One lead in mV -> `(n, window)` model inputs through `model_inputs.input_contract`.

  Args:
    x: `(T,)` signal, NaN = missing.
    fs: its sampling rate.
    window, windows, bandpass, normalize, crop, crop_seed: see `InputSpec`.
    record_id: the record's id (seeds the random crop).
  """
  contract = dict(window=window, bandpass=bandpass, zscore=normalize)
  if windows not in ("first", "all"):
    raise ValueError(f"windows must be 'first' or 'all'; got {windows!r}.")
  if crop not in ("start", "random"):
    raise ValueError(f"crop must be 'start' or 'random'; got {crop!r}.")
  if windows == "first" and crop == "start":
    return model_inputs.input_contract(x, fs, **contract)[None]
  x500 = resample(np.asarray(x, np.float64), fs, pp.OFFICIAL_FS)
  if windows == "first":
    room = x500.shape[0] - window
    rng = np.random.default_rng([crop_seed, zlib.crc32(record_id.encode())])
    start = int(rng.integers(0, room + 1)) if room > 0 else 0
    return model_inputs.input_contract(x500[start : start + window], pp.OFFICIAL_FS, **contract)[
      None
    ]
  n = max(1, x500.shape[0] // window)
  return np.stack(
    [
      model_inputs.input_contract(x500[k * window : (k + 1) * window], pp.OFFICIAL_FS, **contract)
      for k in range(n)
    ]
  )


def _assemble(chunks: list[np.ndarray], window: int, **kwargs) -> Records:
  owner = (
    np.concatenate([np.full(len(c), i, np.int64) for i, c in enumerate(chunks)])
    if chunks
    else np.zeros(0, np.int64)
  )
  x = np.concatenate(chunks) if chunks else np.zeros((0, window), np.float32)
  return Records(x=x, owner=owner, **kwargs)


def read_wfdb_records(
  path: str | os.PathLike,
  *,
  lead: str,
  window: int = 0,
  windows: str = "first",
  spec: InputSpec | None = None,
  max_records: int = 0,
) -> Records:
  """Challenge-format WFDB records under `path` (recursive) with their `# Age/Sex/Dx` labels.

  The format has no patient ids, so each record is its own patient. Fields: `sex` ("F"/"M"/None),
  `age` (years, NaN if unknown), `dx` (SNOMED codes). Inputs: `spec`, or the default contract
  with `window` / `windows`.
  """
  spec = spec or InputSpec(window=window, windows=windows)
  root = pathlib.Path(path).expanduser()
  if not root.is_dir():
    raise FileNotFoundError(f"No WFDB directory {root}.")
  schema.lead_index(lead)  # An unknown lead name fails here, before any reading.
  try:  # The embed CLI's reader layer: aliases (MLII), multi-segment records, units.
    sources = [s for s in readers.find_inputs(root) if s.kind == "wfdb"]
  except readers.InputError:
    sources = []
  sources.sort(key=lambda s: s.id)
  if max_records:
    sources = sources[:max_records]
  if not sources:
    raise FileNotFoundError(f"No WFDB records (*.hea) under {root}.")
  chunks, ids, fields, skipped = [], [], {"sex": [], "age": [], "dx": []}, []
  for src in sources:
    rid = src.id
    try:
      with readers.open_source(src, lead=lead)[0] as rec:
        # float32, as the built datasets' physical values (see `readers.iter_windows`).
        signal = rec.read(0, rec.n_samples).astype(np.float32)
    except Exception as e:  # One unreadable record must not stop the others.
      skipped.append(f"{rid}: {e}")
      continue
    comments = parsing.parse_header_comments(rec.comments)
    chunks.append(lead_windows(signal, rec.fs, record_id=rid, **dataclasses.asdict(spec)))
    ids.append(rid)
    fields["sex"].append(parsing.parse_sex(comments.get("sex"))[0])
    fields["age"].append(parsing.parse_age(comments.get("age"))[0])
    fields["dx"].append(dx.dx_codes(comments.get("dx")))
  return _assemble(
    chunks,
    spec.window,
    ids=ids,
    patients=list(ids),
    splits=[""] * len(ids),
    fields=fields,
    vocabularies={},
    source=os.fspath(root),
    skipped=skipped,
  )


def _plain(value: Any) -> Any:
  """A decoded TFDS feature value -> str / int / float / list."""
  if isinstance(value, bytes):
    return value.decode("utf-8", "replace")
  if isinstance(value, np.ndarray):
    return value.tolist() if value.ndim else value.item()
  if isinstance(value, np.generic):
    return value.item()
  return value


def stored_vocabularies(metadata: Mapping[str, Any]) -> dict[str, list[str]]:
  """Feature -> class names, from a built dataset's `info.metadata` (see `read_tfds_records`)."""
  out = {k: list(v) for k, v in (metadata.get("vocabularies") or {}).items()}
  if isinstance(metadata.get("labels"), (list, tuple)):
    out.setdefault("labels", list(metadata["labels"]))
  classes = metadata.get("classes")
  if isinstance(classes, Mapping):
    for k, v in classes.items():
      out.setdefault(k, list(v))
  elif isinstance(classes, (list, tuple)):
    out.setdefault("label", list(classes))
  return out


def read_tfds_records(
  version_dir: str | os.PathLike,
  *,
  lead: str,
  label_keys: Sequence[str],
  window: int = 0,
  windows: str = "first",
  spec: InputSpec | None = None,
  max_records: int = 0,
) -> Records:
  """Every split of a built dataset (`schema.record_features` schema plus `label_keys`).

  Examples sharing a `record_id` within a split (e.g. `physionet_challenge/all_windows`) are
  windows of one record. `max_records` keeps the first examples of each split. Class names
  stored with the dataset (`info.metadata`: `vocabularies` per feature, `labels` for a
  `labels` feature, `classes` per feature or for a `label` feature) become `vocabularies`.
  Inputs: `spec`, or the default contract with `window` / `windows`.
  """
  from tensorflow_datasets.core import read_only_builder  # Lazy: heavy import.

  spec = spec or InputSpec(window=window, windows=windows)
  builder = read_only_builder.builder_from_directory(os.fspath(version_dir))
  missing = [k for k in label_keys if k not in builder.info.features]
  if missing:
    raise KeyError(f"{version_dir} has no feature {', '.join(missing)}.")
  vocabularies = stored_vocabularies(builder.info.metadata or {})
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
      x = schema.to_physical(
        example["signal"][:, j : j + 1], example["gain"][j : j + 1], example["baseline"][j : j + 1]
      )[:, 0]
      key = (split, rid)
      chunks.setdefault(key, []).append(
        lead_windows(x, float(example["sampling_rate"]), record_id=rid, **dataclasses.asdict(spec))
      )
      if key not in info:
        info[key] = (
          _plain(example["patient_id"]) or rid,
          {k: _plain(example[k]) for k in label_keys},
        )
  keys = list(chunks)
  return _assemble(
    [np.concatenate(chunks[k]) for k in keys],
    spec.window,
    ids=[k[1] for k in keys],
    patients=[info[k][0] for k in keys],
    splits=[k[0] for k in keys],
    fields={f: [info[k][1][f] for k in keys] for f in label_keys},
    vocabularies=vocabularies,
    source=os.fspath(version_dir),
    skipped=skipped,
  )


def patient_split(
  patients: Sequence[str], *, fractions: Sequence[float] = (0.7, 0.15, 0.15), seed: int = 0
) -> np.ndarray:
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
  split_of[order[n - n_val - n_test : n - n_test]] = 1
  split_of[order[n - n_test :]] = 2
  index = {p: split_of[i] for i, p in enumerate(unique)}
  return np.array([index[p] for p in patients], np.int64)


def assign_splits(
  records: Records, *, mode: str, fractions: Sequence[float], seed: int
) -> np.ndarray:
  """`(R,)` split index per record: "predefined" (the dataset's) or "patient" (seeded)."""
  if mode == "patient":
    return patient_split(records.patients, fractions=fractions, seed=seed)
  if mode != "predefined":
    raise ValueError(f"split must be 'predefined' or 'patient'; got {mode!r}.")
  missing = [s for s in SPLITS if s not in set(records.splits)]
  if missing:
    raise ValueError(
      f"{records.source} has no predefined {'/'.join(missing)} split; use a "
      "task with split='patient'."
    )
  return np.array([SPLITS.index(s) if s in SPLITS else -1 for s in records.splits], np.int64)


DataKey = tuple[str, str, str, InputSpec]


def data_key(task: Mapping[str, Any], data: Mapping[str, Any]) -> DataKey:
  """Where and how `task`'s records are read: `(source, where, lead, InputSpec)`.

  `source` is "wfdb" (`data.wfdb_dir`) or "tfds" (the task's dataset under `data.data_dir`); a
  task's own `lead` / `window` override the config's (`data.lead`, `data.window`), and its
  `bandpass`, `normalize` and `crop` fix its input protocol. Tasks with the same key share one
  reading and, in probing, one embedding per model.
  """
  lead = task.get("lead") or data["lead"]
  spec = InputSpec(
    window=int(task.get("window") or data["window"]),
    windows=data["windows"],
    bandpass=bool(task.get("bandpass", True)),
    normalize=bool(task.get("normalize", True)),
    crop=task.get("crop") or "start",
    crop_seed=int(data.get("crop_seed", 0)),
  )
  if data["wfdb_dir"]:
    if not task["wfdb"]:
      raise ValueError(
        f"Task on {task['dataset']} cannot read WFDB records (wfdb=); use data_dir=."
      )
    return ("wfdb", data["wfdb_dir"], lead, spec)
  return ("tfds", task["dataset"], lead, spec)


def load_records(key: DataKey, label_keys: Sequence[str], data: Mapping[str, Any]) -> Records:
  """The records of `data_key` `key` with the `label_keys` fields (`data`: config.data)."""
  source, where, lead, spec = key
  common = dict(lead=lead, spec=spec, max_records=data["max_records"])
  if source == "wfdb":
    return read_wfdb_records(where, **common)
  return read_tfds_records(
    built.resolve_dataset(where, data["data_dir"]), label_keys=label_keys, **common
  )
