r"""Embeddings of ECG records with a pretrained backbone: library functions and a CLI.

    python -m clef_jax.embed --workdir W --input PATH --output emb.npy [--lead I]
    python -m clef_jax.embed --torch-weights clef_small.ckpt --size small --input PATH \
        --output emb.npy [--lead II]

PATH is one WFDB record (`rec` or `rec.hea`), a directory searched recursively for `*.hea`, or a
`.npy` array of single-lead signals `(N, T)` or `(T,)` (or 12-lead `(N, T, 12)`, in
`schema.LEAD_ORDER`; `--lead` picks one) sampled at `--fs` Hz (default 500), in mV.

Every signal goes through the models' input contract (spec §I) before the backbone:
resample to 500 Hz -> interpolate NaN -> bandpass 0.67-40 Hz -> first 10 s window (shorter
records are zero-padded after the z-score) -> z-score. The output is `emb.npy` `(N, D)` float32,
one row per record, plus `emb.ids.txt` with the record ids in the same order (file paths
relative to PATH for WFDB input, row numbers for `.npy` input). Records that cannot be read are
listed on stderr and skipped.
"""

from __future__ import annotations

import os
import pathlib
import sys
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from clef_jax.data import schema, wfdb_io
from clef_jax import preprocess as pp

# Filter padding of `scipy.signal.filtfilt` (3 * 11 taps): shorter signals are not filtered.
_MIN_FILTER_SAMPLES = 34


def input_contract(x: np.ndarray, fs: float, *, window: int = schema.WINDOW_SAMPLES,
                   bandpass: bool = True) -> np.ndarray:
  """One lead in physical units -> the backbone's input: `(window,)` float32 at 500 Hz.

  The same chain as pretraining's deterministic part (spec §D/§I), without augmentation:
  resample to 500 Hz, interpolate NaN, bandpass 0.67-40 Hz, keep the first `window` samples,
  z-score over the real samples, zero-pad a shorter record at the end.

  Args:
    x: `(T,)` signal in mV, NaN = missing.
    fs: sampling rate of `x` in Hz.
    window: samples per model input at 500 Hz (5000 = 10 s, the released models' contract).
    bandpass: apply the 0.67-40 Hz filter (pretraining does; turn off only for ablations).

  Returns:
    `(window,)` float32 with no NaN.
  """
  x = np.asarray(x, np.float64)
  if x.ndim != 1:
    raise ValueError(f"input_contract takes one lead (T,); got shape {x.shape}.")
  # Only the samples that end up in the window are processed (a 1-hour Holter stays cheap).
  native = int(np.ceil(window * fs / pp.OFFICIAL_FS)) + 1
  x = pp.resample(x[:native], fs, pp.OFFICIAL_FS)[:window]
  x = pp.interpolate_nan(x[None])[0]
  if bandpass and x.shape[0] >= _MIN_FILTER_SAMPLES:
    x = pp.bandpass(x, pp.OFFICIAL_FS)
  out = np.zeros(window, np.float32)
  if x.shape[0]:
    out[:x.shape[0]] = pp.zscore(x)
  return out


def record_input(record: dict[str, Any], *, lead: str | int, window: int = schema.WINDOW_SAMPLES
                 ) -> np.ndarray:
  """A decoded TFDS example (`schema.record_features` schema) -> `(window,)` model input."""
  j = lead if isinstance(lead, int) else schema.lead_index(lead)
  x = schema.to_physical(record["signal"][:, j:j + 1], record["gain"][j:j + 1],
                      record["baseline"][j:j + 1])[:, 0]
  return input_contract(x, float(record["sampling_rate"]), window=window)


def source_inputs(source: Sequence[dict[str, Any]], *, lead: str | int,
                  window: int = schema.WINDOW_SAMPLES, label_keys: Iterable[str] = (),
                  limit: int | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
  """Model inputs and labels of (the first `limit`) records of a random-access source.

  Returns:
    `(x, labels)`: `x` `(N, window)` float32, `labels[key]` `(N,)`.
  """
  n = len(source) if limit is None else min(limit, len(source))
  xs, labels = [], {k: [] for k in label_keys}
  for i in range(n):
    record = source[i]
    xs.append(record_input(record, lead=lead, window=window))
    for k in labels:
      labels[k].append(record[k])
  return np.stack(xs), {k: np.asarray(v) for k, v in labels.items()}


def make_embed_fn(model) -> Callable[[Any, np.ndarray], Any]:
  """`embed(params, x (B, L)) -> (B, D)` float32, jitted once per input shape."""
  import jax  # Lazy: the CLI's --help and input errors should not wait for jax.

  @jax.jit
  def embed(params, x):
    z, _ = model.apply({"params": params}, x[..., None], train=False)  # (B, L, 1) -> (B, D)
    return z.astype(np.float32)

  return embed


def embed_array(embed_fn: Callable[[Any, np.ndarray], Any], params: Any, x: np.ndarray, *,
                batch_size: int = 64) -> np.ndarray:
  """Embeds `x` `(N, L)` in fixed-size batches (the last is zero-padded: one compilation).

  Returns:
    `(N, D)` float32 numpy array.
  """
  n = x.shape[0]
  batch_size = max(1, min(batch_size, n))
  out = []
  for start in range(0, n, batch_size):
    chunk = x[start:start + batch_size]
    pad = batch_size - chunk.shape[0]
    if pad:
      chunk = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:], chunk.dtype)])
    out.append(np.asarray(embed_fn(params, chunk))[:batch_size - pad])
  return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


# ------------------------------------------------------------------------------------------------
# Reading inputs from disk.
# ------------------------------------------------------------------------------------------------
def _wfdb_records(path: pathlib.Path) -> tuple[list[pathlib.Path], pathlib.Path]:
  """Record paths (without extension) under `path`, and the root ids are relative to."""
  if path.is_dir():
    return sorted(p.with_suffix("") for p in path.rglob("*.hea")), path
  record = path.with_suffix("") if path.suffix == ".hea" else path
  if not record.with_suffix(".hea").is_file():
    raise FileNotFoundError(f"No WFDB header {record.with_suffix('.hea')} (and {path} is not a "
                            "directory or a .npy file).")
  return [record], record.parent


def read_lead(record: pathlib.Path, lead: str) -> tuple[Any, np.ndarray]:
  """`(record, one lead's samples in physical units)` of a WFDB record (path without extension).

  Raises whatever reading the record raises, or ValueError when the record lacks `lead`; callers
  that read many records skip the record and report the message.
  """
  rec = wfdb_io.read_wfdb(record)
  j = schema.lead_index(lead)
  if not rec.lead_present[j]:
    raise ValueError(f"no lead {lead}")
  return rec, rec.physical()[:, j]


def read_inputs(path: str | os.PathLike, *, lead: str, window: int = schema.WINDOW_SAMPLES,
                fs: float = pp.OFFICIAL_FS) -> tuple[np.ndarray, list[str], list[str]]:
  """Reads PATH (WFDB record, directory of records, or `.npy`) into model inputs.

  Args:
    path: see the module docstring.
    lead: lead name for WFDB and 12-lead `.npy` input.
    window: samples per model input.
    fs: sampling rate of `.npy` input.

  Returns:
    `(x (N, window) float32, ids, errors)`; `errors` holds one line per skipped record.
  """
  path = pathlib.Path(path)
  j = schema.lead_index(lead)
  if path.suffix == ".npy":
    if not path.is_file():
      raise FileNotFoundError(f"No such file: {path}")
    a = np.load(path, allow_pickle=False)
    if a.ndim == 1:
      a = a[None]
    elif a.ndim == 3:
      if a.shape[-1] != schema.NUM_LEADS:
        raise ValueError(f"{path}: 3-D input must be (N, T, 12); got {a.shape}.")
      a = a[..., j]
    elif a.ndim != 2:
      raise ValueError(f"{path}: expected (T,), (N, T) or (N, T, 12); got {a.shape}.")
    x = np.stack([input_contract(row, fs, window=window) for row in a])
    return x, [str(i) for i in range(len(x))], []
  if not path.exists():
    raise FileNotFoundError(f"No such file or directory: {path}")
  records, root = _wfdb_records(path)
  if not records:
    raise FileNotFoundError(f"No WFDB records (*.hea) under {path}.")
  xs, ids, errors = [], [], []
  for record in records:
    rid = record.relative_to(root).as_posix()
    try:
      rec, signal = read_lead(record, lead)
    except Exception as e:  # One unreadable record must not stop the others.
      errors.append(f"{rid}: {e}")
      continue
    xs.append(input_contract(signal, rec.sampling_rate, window=window))
    ids.append(rid)
  x = np.stack(xs) if xs else np.zeros((0, window), np.float32)
  return x, ids, errors


# ------------------------------------------------------------------------------------------------
# CLI.
# ------------------------------------------------------------------------------------------------
def _load_backbone(args) -> tuple[Any, Any]:
  """(model, params) from a training workdir or a PyTorch file."""
  from clef_jax import checkpoint, models

  if args.workdir:
    config, params = checkpoint.load_backbone(args.workdir)
    return models.create_backbone(config["model"]["name"], config["model"]["size"]), params
  if not args.size:
    raise ValueError("--torch-weights needs --size (small | medium | large).")
  params = checkpoint.load_backbone_torch(args.torch_weights, name=args.backbone, size=args.size)
  return models.create_backbone(args.backbone, args.size), params


def main(argv: Sequence[str] | None = None) -> int:
  import argparse

  parser = argparse.ArgumentParser(
      prog="python -m clef_jax.embed", description=__doc__.split("\n\n")[0],
      formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
  src = parser.add_mutually_exclusive_group(required=True)
  src.add_argument("--workdir", help="training workdir (its latest checkpoint)")
  src.add_argument("--torch-weights", dest="torch_weights",
                   help="PyTorch Net1D file (CLEF .ckpt, state_dict, safetensors)")
  parser.add_argument("--size", choices=("small", "medium", "large"),
                      help="backbone size of --torch-weights")
  parser.add_argument("--backbone", default="net1d", choices=("net1d", "msformer"),
                      help="backbone of --torch-weights (default net1d, the paper's)")
  parser.add_argument("--input", required=True, help="WFDB record, directory, or .npy")
  parser.add_argument("--output", required=True, help="output .npy (ids go to .ids.txt)")
  parser.add_argument("--lead", default="I", help="lead to embed (default I, as the paper)")
  parser.add_argument("--fs", type=float, default=pp.OFFICIAL_FS, help=".npy sampling rate")
  parser.add_argument("--window", type=int, default=schema.WINDOW_SAMPLES,
                      help="samples per input at 500 Hz (default 5000 = 10 s)")
  parser.add_argument("--batch_size", type=int, default=64)
  args = parser.parse_args(argv)
  from absl import logging as absl_logging  # Orbax/TFDS chatter (read-only notes) off the console.
  absl_logging.set_verbosity(absl_logging.ERROR)
  try:
    schema.lead_index(args.lead)
    x, ids, errors = read_inputs(args.input, lead=args.lead, window=args.window, fs=args.fs)
    for line in errors:
      print(f"skipped {line}", file=sys.stderr)
    if not ids:
      raise ValueError(f"No readable records in {args.input}.")
    model, params = _load_backbone(args)
  except (FileNotFoundError, ValueError, KeyError) as e:
    print(f"error: {e.args[0] if e.args else e}", file=sys.stderr)
    return 1
  emb = embed_array(make_embed_fn(model), params, x, batch_size=args.batch_size)
  output = pathlib.Path(args.output)
  output.parent.mkdir(parents=True, exist_ok=True)
  np.save(output, emb)
  ids_path = output.with_suffix(".ids.txt")
  ids_path.write_text("".join(f"{i}\n" for i in ids))
  print(f"{len(ids)} records -> {output} {emb.shape} (ids: {ids_path}); "
        f"{len(errors)} skipped")
  return 0


if __name__ == "__main__":
  sys.exit(main())
