r"""Embeddings of ECG recordings with a pretrained backbone: batched embedding and the CLI.

    python -m clef_jax.embed --workdir W --input PATH --output emb.npy [--lead II | --channel MLII]
    python -m clef_jax.embed --torch_weights clef_small.ckpt --size small --input holter.edf \
        --output emb.npy [--window_s 10 --hop_s 5 --aggregate mean --max_windows 100]

PATH is a WFDB record (`rec`, `rec.hea`; single- or multi-segment), an EDF/EDF+/BDF file, an
Apple Watch / Apple Health ECG CSV export, a plain CSV, an `.npy` array (`(T,)`, `(N, T)` or
`(N, T, 12)`), or a directory searched recursively for them (see `clef_jax.readers`). The
channel is a standard lead (`--lead`, aliases such as MLII or "Lead I" accepted, with a log
line), or the file's own channel name or index (`--channel`); default lead I, or the file's only
channel. Units come from the file; CSV and `.npy` say neither rate nor unit: `--fs` and `--unit`
are required for them.

Each recording is cut into `--window_s` windows every `--hop_s` seconds, read in bounded chunks
(a 24-hour Holter is never loaded whole). Each window goes through the models' input contract
(docs/method.md §D, §I: resample to 500 Hz -> interpolate NaN -> bandpass 0.67-40 Hz -> z-score; a
last window shorter than `--window_s` is zero-padded). Windows with less than `--min_s` seconds
of signal, more than `--max_missing` missing samples, or a flat signal are skipped and counted.

Outputs (written atomically; existing ones are kept unless --overwrite): `emb.npy` `(rows, D)`
float32, one row per window (or per record with `--aggregate mean`); `emb.npy.index.csv` with
`record,channel,start_s,end_s,fs_native` per row (plus `windows` when aggregated); `emb.ids.txt`
with the record id per row. Exit status 1: unusable input or weights; 2: bad arguments.

On Linux the command re-executes itself once with the caching host allocator preloaded
(`clef_jax.allocator`; `--host_allocator system` keeps glibc's malloc).
"""

from __future__ import annotations

import collections
import itertools
import os
import pathlib
import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from clef_jax import files
from clef_jax import preprocess as pp
from clef_jax.data import schema


def make_embed_fn(model) -> Callable[[Any, np.ndarray], Any]:
  """`embed(params, x (B, L)) -> (B, D)` float32, jitted once per input shape."""
  import jax  # Lazy: the CLI's --help and input errors should not wait for jax.

  @jax.jit
  def embed(params, x):
    z, _ = model.apply({"params": params}, x[..., None], train=False)  # (B, L, 1) -> (B, D)
    return z.astype(np.float32)

  return embed


def embed_array(
  embed_fn: Callable[[Any, np.ndarray], Any], params: Any, x: np.ndarray, *, batch_size: int = 64
) -> np.ndarray:
  """Embeds `x` `(N, L)` in fixed-size batches (the last is zero-padded: one compilation).

  Returns:
    `(N, D)` float32 numpy array.
  """
  n = x.shape[0]
  batch_size = max(1, min(batch_size, n))
  out = []
  for start in range(0, n, batch_size):
    chunk = x[start : start + batch_size]
    pad = batch_size - chunk.shape[0]
    if pad:
      chunk = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:], chunk.dtype)])
    out.append(np.asarray(embed_fn(params, chunk))[: batch_size - pad])
  return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


# ------------------------------------------------------------------------------------------------
# CLI.
# ------------------------------------------------------------------------------------------------
def _outputs(output: pathlib.Path) -> dict[str, pathlib.Path]:
  return {
    "vectors": output,
    "ids": output.with_suffix(".ids.txt"),
    "index": output.with_name(output.name + ".index.csv"),
  }


def _check_output(output: pathlib.Path, *, overwrite: bool) -> dict[str, pathlib.Path]:
  """Fails early (before any embedding) when the outputs cannot be written or would clobber."""
  if output.suffix != ".npy":
    raise ValueError(f"--output {output}: must end in .npy.")
  paths = _outputs(output)
  existing = [str(p) for p in paths.values() if p.exists()]
  if existing and not overwrite:
    raise ValueError(
      f"--output: {', '.join(existing)} already exist(s); pass --overwrite or "
      "choose another --output."
    )
  if output.is_dir():
    raise ValueError(f"--output {output} is a directory.")
  # Missing directories are created only when the outputs are written, so that a run that fails
  # leaves nothing behind; here the nearest existing ancestor must be a writable directory.
  ancestor = output.parent.absolute()
  while not ancestor.exists() and ancestor != ancestor.parent:
    ancestor = ancestor.parent
  if not ancestor.is_dir():
    raise ValueError(f"--output: cannot create directory {output.parent} ({ancestor} is a file).")
  if not os.access(ancestor, os.W_OK | os.X_OK):
    if ancestor == output.parent.absolute():
      raise ValueError(f"--output: directory {output.parent} is not writable.")
    raise ValueError(
      f"--output: cannot create directory {output.parent} ({ancestor} is not writable)."
    )
  return paths


def _write_outputs(paths: dict[str, pathlib.Path], result) -> None:
  import csv

  rows = result.index_rows()
  columns = ["record", "channel", "start_s", "end_s", "fs_native"]
  if any(n != 1 for n in result.windows):
    columns.append("windows")

  def write_vectors(tmp):
    with open(tmp, "wb") as f:
      np.save(f, result.vectors)

  def write_index(tmp):
    with open(tmp, "w", newline="") as f:
      w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
      w.writeheader()
      w.writerows(rows)

  paths["vectors"].parent.mkdir(parents=True, exist_ok=True)
  files.atomic_write_all(
    {
      paths["vectors"]: write_vectors,
      paths["ids"]: lambda tmp: tmp.write_text("".join(f"{r['record']}\n" for r in rows)),
      paths["index"]: write_index,
    }
  )


def _parser():
  import argparse

  from clef_jax import allocator, cli

  parser = cli.ArgumentParser(
    prog="python -m clef_jax.embed",
    description=__doc__.split("\n\n")[0],
    formatter_class=argparse.RawDescriptionHelpFormatter,
    epilog=__doc__.split("\n\n", 1)[1],
  )
  src = parser.add_mutually_exclusive_group(required=True)
  src.add_argument("--workdir", help="training workdir or step directory (latest checkpoint)")
  src.add_argument(
    "--torch_weights", help="PyTorch backbone file (CLEF .ckpt, state_dict, safetensors)"
  )
  parser.add_argument(
    "--size", choices=("small", "medium", "large"), help="backbone size of --torch_weights"
  )
  parser.add_argument(
    "--backbone",
    default="net1d",
    choices=("net1d", "msformer"),
    help="backbone of --torch_weights (default net1d, the paper's)",
  )
  parser.add_argument(
    "--input",
    required=True,
    help="WFDB record (rec or rec.hea), EDF/BDF, CSV, .npy, or a directory",
  )
  parser.add_argument(
    "--output", required=True, help="output .npy (also <output>.index.csv and .ids.txt)"
  )
  parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
  parser.add_argument(
    "--lead",
    help="standard lead to embed (aliases such as MLII accepted; "
    "default: lead I, or the file's only channel)",
  )
  parser.add_argument("--channel", help="the file's own channel name, or its 0-based index")
  parser.add_argument("--fs", type=float, help="sampling rate in Hz (required for CSV/.npy input)")
  parser.add_argument(
    "--unit",
    help="signal unit when the file has none or a wrong one "
    "(uV, mV, V; required for CSV/.npy input)",
  )
  parser.add_argument(
    "--window_s",
    type=float,
    default=float(schema.WINDOW_SECONDS),
    help="seconds per window, 1 to 3600 (default 10)",
  )
  parser.add_argument("--hop_s", type=float, help="seconds between windows (default: window_s)")
  parser.add_argument(
    "--min_s",
    type=float,
    help="least seconds of signal in a window, >= 0.5 (default: window_s / 2)",
  )
  parser.add_argument(
    "--max_missing",
    type=float,
    default=0.5,
    help="largest missing (NaN) fraction of a kept window (default 0.5)",
  )
  parser.add_argument("--max_windows", type=int, help="at most this many windows per record")
  parser.add_argument(
    "--aggregate",
    default="none",
    choices=("none", "mean"),
    help="mean: one row per record (the mean of its windows' embeddings)",
  )
  parser.add_argument("--window", type=int, help=argparse.SUPPRESS)  # Old: samples at 500 Hz.
  parser.add_argument("--batch_size", type=int, default=64)
  parser.add_argument("--quiet", action="store_true", help="no progress line")
  parser.add_argument(
    "--host_allocator",
    default="cache",
    choices=allocator.CHOICES,
    help="cache (default): re-run once with clef_jax.allocator's caching allocator preloaded "
    "(faster CPU runs; Linux, a C compiler); system: glibc's malloc",
  )
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  """The CLI; returns 0, 1 (unusable input or weights), 2 (bad arguments) or 130 (Ctrl-C)."""
  try:
    return _main(argv)
  except KeyboardInterrupt:  # Before or while loading: nothing has been written yet.
    print("error: interrupted; nothing written.", file=sys.stderr)
    return 130


def _main(argv: Sequence[str] | None) -> int:
  args = _parser().parse_args(argv)
  from clef_jax import (
    cli,
    readers,  # Lazy: --help should not wait for these imports.
  )

  # Only the command line itself is re-executed (the same command, the allocator preloaded).
  cli.start_host_allocator(args.host_allocator, "--host_allocator", reexec=argv is None)

  def fail(message: str, code: int = 1) -> int:
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    return code

  try:
    window_s = args.window_s if args.window is None else args.window / pp.OFFICIAL_FS
    windowing = readers.Windowing(
      window_s=window_s,
      hop_s=args.hop_s,
      min_s=args.min_s,
      max_missing=args.max_missing,
      max_windows=args.max_windows,
    )
    lead = readers.check_lead(args.lead)
    if args.batch_size < 1:
      raise readers.InputError(f"--batch_size {args.batch_size}: must be at least 1.")
    if args.fs is not None:
      readers.core.check_fs(args.fs, where="--fs")
    if args.unit is not None:
      readers.core.unit_scale(args.unit, where="--unit")
    paths = _check_output(pathlib.Path(args.output), overwrite=args.overwrite)
  except (readers.InputError, ValueError) as e:
    return fail(str(e), 2)
  try:
    sources = readers.find_inputs(args.input)
  except readers.InputError as e:
    return fail(str(e))

  from absl import logging as absl_logging  # Orbax/TFDS chatter (read-only notes) off the console.

  absl_logging.set_verbosity(absl_logging.ERROR)
  from clef_jax import encoder

  try:
    items = (item for src in sources for item in _open(readers, src, lead, args))
    first = next(items, None)
    if len(sources) == 1 and isinstance(first, readers.Skipped):
      return fail(first.message)  # One input that cannot be read: its reason is the message.
    enc = encoder.Encoder.load(
      args.workdir or args.torch_weights,
      backbone=args.backbone,
      size=args.size,
      batch_size=args.batch_size,
    )
  except (readers.InputError, FileNotFoundError, ValueError, KeyError) as e:
    return fail(cli.error_text(e))
  except Exception as e:  # Weights files fail in many ways (torch, orbax, safetensors).
    return fail(
      f"cannot load weights from {args.workdir or args.torch_weights} "
      f"({type(e).__name__}: {cli.error_text(e)})."
    )
  progress = None if args.quiet else encoder.Progress(len(sources), stream=sys.stderr)
  log = encoder.stderr_log
  if len(sources) == 1:  # The one input's skip reason becomes the error line: say it once.
    log = lambda line: None if line.startswith("skipped ") else encoder.stderr_log(line)  # noqa
  try:
    chain = itertools.chain([first] if first is not None else [], items)
    result = enc.embed_inputs(
      chain, windowing, aggregate=args.aggregate, log=log, progress=progress
    )
  except KeyboardInterrupt:
    return fail("interrupted; nothing written.", 130)
  except readers.InputError as e:
    return fail(str(e))
  except Exception as e:
    if not _out_of_memory(e):
      raise
    return fail(
      f"out of memory embedding {windowing.window_s:g}-s windows in batches of "
      f"{args.batch_size}; pass a smaller --batch_size (or --window_s). Nothing written."
    )
  if not result.index:
    if len(result.skipped_records) == 1:
      return fail(result.skipped_records[0].message)
    return fail(f"no window to embed in {args.input} ({_counts(result)}).")
  try:
    _write_outputs(paths, result)
  except OSError as e:
    return fail(f"cannot write {args.output} ({e.strerror or e}); nothing written.")
  except KeyboardInterrupt:
    return fail("interrupted while writing; outputs left as they were.", 130)
  n_records = len({s.record for s in result.index})
  print(
    f"{n_records} records, {sum(result.windows)} windows -> {paths['vectors']} "
    f"{result.vectors.shape} (index: {paths['index']}); {_counts(result)}"
  )
  return 0


def _out_of_memory(e: Exception) -> bool:
  """Host or accelerator memory exhausted (XLA raises a runtime error saying so)."""
  return (
    isinstance(e, MemoryError)
    or "RESOURCE_EXHAUSTED" in str(e)
    or ("out of memory" in str(e).lower())
  )


def _open(readers, src, lead, args):
  try:
    yield from readers.open_source(src, lead=lead, channel=args.channel, fs=args.fs, unit=args.unit)
  except readers.InputError as e:
    yield readers.Skipped(src.id, e.reason, str(e))


def _counts(result) -> str:
  records = collections.Counter(s.reason for s in result.skipped_records)
  text = "skipped records: " + (", ".join(f"{n} {r}" for r, n in sorted(records.items())) or "none")
  if result.skipped_windows:
    text += "; skipped windows: " + ", ".join(
      f"{n} {r}" for r, n in sorted(result.skipped_windows.items())
    )
  return text


if __name__ == "__main__":
  sys.exit(main())
