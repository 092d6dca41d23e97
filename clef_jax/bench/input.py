"""Input-pipeline benchmark: our grain pipeline from built shards vs the official per-sample path.

    python -m clef_jax.bench input [--num_records 2000] [--batch_size 64] [--steps 20] \
        [--workers 0,1,2] [--encodings zlib,bytes] [--data_dir DIR] [--json out.json]

1. Builds (or reuses) a `synthetic_ecg` archive of `--num_records` subjects in `--data_dir`
   (default: a folder under the system temp dir) per signal encoding (`bytes`: the shared schema, raw
   int16 that ArrayRecord compresses; `zlib`: an extra zlib layer) and reports bytes per record on disk.
2. **Official path** (docs/method.md §D, one item at a time as its `Dataset.__getitem__`): draw two leads,
   read the WFDB record from disk with `wfdb.rdrecord` (twice, as the official code does),
   interpolate NaN, design the Butterworth filter and `filtfilt` each view, the five-way noise
   choice with all 15 rows rescaled, zero mask, z-score. A handful of synthetic records are
   written to WFDB in a temp dir for it.
3. **Ours**: `input_pipeline.make_pretrain_iterator` at `--batch` with 0, 1 and 2 worker processes
   (one compute thread each), after a warm-up batch (worker start-up is not timed).

A *signal* is one single-lead 10 s view (the model's input row); one record gives two. "Per core"
divides by the CPU seconds the run consumed (this process plus its workers, via psutil), so it is
meaningful on a shared machine; wall-clock rates are reported too. The stage breakdown times
decode (TFDS data source), `TwoViews` and `AugmentBatch` separately in one thread.
"""

from __future__ import annotations

import argparse
import glob
import os
import random
import sys
import tempfile
import time

import numpy as np

from clef_jax import cli
from clef_jax.bench import quiet

# MIMIC-IV-ECG header order (aVF before aVL), used for the WFDB files of the official path.
MIMIC_LEADS = ("I", "II", "III", "aVR", "aVF", "aVL", "V1", "V2", "V3", "V4", "V5", "V6")


def _cpu_seconds(children: bool = True) -> float:
  """User + system CPU seconds of this process and (optionally) its live child processes."""
  try:
    import psutil
  except ImportError:  # Fall back to this process only.
    t = os.times()
    return t.user + t.system
  proc = psutil.Process()
  total = sum(proc.cpu_times()[:2])
  if children:
    for child in proc.children(recursive=True):
      try:
        total += sum(child.cpu_times()[:2])
      except psutil.Error:
        pass
  return total


def build_archive(
  num_records: int, data_dir: str, signal_encoding: str = "bytes"
) -> tuple[str, tuple[float, float] | None, float]:
  """Builds (or reuses) `synthetic_ecg` with `num_records` subjects and that signal encoding.

  Returns:
    (version directory, (wall, CPU) build seconds or None if reused, on-disk bytes per record).
  """
  from clef_jax import build

  builder = build.builder_class("synthetic_ecg")(
    data_dir=data_dir, num_subjects=num_records, signal_encoding=signal_encoding
  )
  seconds = None
  if not os.path.isdir(builder.data_path):
    start, cpu = time.perf_counter(), time.process_time()
    builder.download_and_prepare(file_format="array_record")
    seconds = (time.perf_counter() - start, time.process_time() - cpu)
  files = glob.glob(os.path.join(os.fspath(builder.data_path), "*.array_record*"))
  total = sum(os.path.getsize(f) for f in files)
  return os.fspath(builder.data_path), seconds, total / num_records


# ----------------------------------------------------------------------------------------------
# The official per-sample path (a re-derivation of docs/method.md §D, for timing).


def write_wfdb_records(records, directory: str) -> list[str]:
  """Writes records (builder schema) as MIMIC-like WFDB files; returns their paths."""
  import wfdb

  from clef_jax.data import schema

  order = [schema.lead_index(name) for name in MIMIC_LEADS]
  paths = []
  for i, rec in enumerate(records):
    name = f"rec{i:03d}"
    wfdb.wrsamp(
      name,
      fs=float(rec["sampling_rate"]),
      units=["mV"] * 12,
      sig_name=list(MIMIC_LEADS),
      d_signal=rec["signal"][:, order].astype(np.int32),
      fmt=["16"] * 12,
      adc_gain=[float(g) for g in rec["gain"][order]],
      baseline=[int(b) for b in rec["baseline"][order]],
      write_dir=directory,
    )
    paths.append(os.path.join(directory, name))
  return paths


def official_item(
  path: str, noise_mat: dict, pyrng: random.Random, nprng: np.random.RandomState
) -> np.ndarray:
  """One official `__getitem__`: `(2, 5000)` float z-scored views, all work per sample."""
  import scipy.signal
  import wfdb

  ch1, ch2 = nprng.choice(12, size=2, replace=True)
  names = [MIMIC_LEADS[ch1], MIMIC_LEADS[ch2]]  # view 2 keeps its drawn name for the noise
  seg1 = wfdb.rdrecord(path, sampfrom=0, sampto=5000).p_signal[:, ch1]
  if nprng.rand() < 0.8:
    ch2 = ch1
  seg2 = wfdb.rdrecord(path, sampfrom=0, sampto=5000).p_signal[:, ch2]
  mapping = {
    "I": 0,
    "II": 1,
    "III": 2,
    "AVR": 3,
    "AVL": 4,
    "AVF": 5,
    "V1": 6,
    "V2": 7,
    "V3": 8,
    "V4": 9,
    "V5": 10,
    "V6": 11,
  }
  keys = ("motion_artefacts", "electrode_movement", "baseline_wander", "mixture_of_noises")
  out = []
  for seg, name in zip((seg1, seg2), names):
    bad = np.isnan(seg)
    if bad.all():
      seg = np.zeros_like(seg)
    elif bad.any():
      t = np.arange(len(seg))
      seg = seg.copy()
      seg[bad] = np.interp(t[bad], t[~bad], seg[~bad])
    b, a = scipy.signal.butter(5, [0.67 / 250, 40 / 250], btype="band")  # per call, as official
    seg = scipy.signal.filtfilt(b, a, seg)
    kind = pyrng.choice(range(5))
    if kind:
      data = noise_mat[keys[kind - 1]]
      start = pyrng.randint(0, data.shape[1] - 5000 - 1)
      window = data[:, start : start + 5000].copy()  # (the official mutates in place; we copy)
      for i in range(window.shape[0]):
        std = np.std(window[i])
        window[i] = 0.1 * (window[i] / std) if std > 0 else 0
      seg = seg + window[mapping.get(name, 0)]
    if pyrng.random() < 0.2:
      mask_len = int(5000 * pyrng.uniform(0.1, 0.3))
      start = pyrng.randint(0, 5000 - mask_len)
      seg = seg.copy()
      seg[start : start + mask_len] = 0
    out.append((seg - seg.mean()) / (seg.std() + 1e-8))
  return np.stack(out)


def time_official(paths: list[str], items: int) -> dict:
  from clef_jax import noise

  noise_mat = dict(noise.parametric_noise_bank().arrays)
  pyrng, nprng = random.Random(42), np.random.RandomState(42)
  official_item(paths[0], noise_mat, pyrng, nprng)  # warm-up (imports, caches)
  cpu, wall = _cpu_seconds(children=False), time.perf_counter()
  for i in range(items):
    official_item(paths[i % len(paths)], noise_mat, pyrng, nprng)
  wall = time.perf_counter() - wall
  cpu = _cpu_seconds(children=False) - cpu
  return dict(path="official per-sample (WFDB)", workers=0, records=items, wall_s=wall, cpu_s=cpu)


# ----------------------------------------------------------------------------------------------
# Ours.


def time_ours(source, batch: int, steps: int, workers: int) -> dict:
  from clef_jax import input_pipeline as ip

  it = ip.make_pretrain_iterator(
    data_source=source, global_batch_size=batch, seed=0, num_workers=workers, read_threads=1
  )
  next(it)  # warm-up: worker start-up, noise bank, first batches in flight
  cpu, wall = _cpu_seconds(), time.perf_counter()
  for _ in range(steps):
    batch_out = next(it)
  wall = time.perf_counter() - wall
  cpu = _cpu_seconds() - cpu
  it.close()
  assert np.isfinite(batch_out["views"]).all()
  return dict(
    path="ours (grain, built shards)",
    workers=workers,
    records=steps * batch,
    wall_s=wall,
    cpu_s=cpu,
  )


def stage_breakdown(source, batch: int, records: int) -> dict:
  """Single-thread CPU ms per record of decode (read + `decode_record`), `TwoViews` and
  `AugmentBatch`."""
  from clef_jax import input_pipeline as ip

  records = max(batch, records // batch * batch)
  two, aug = ip.TwoViews(), ip.AugmentBatch()
  ip.noise_bank(None)  # built once per process; not a per-record cost
  c = time.process_time()
  decoded = [dict(source[i % len(source)], index=i % len(source)) for i in range(records)]
  decode = time.process_time() - c
  rng = np.random.default_rng(0)
  c = time.process_time()
  drawn = [two.random_map(r, rng) for r in decoded]
  views = time.process_time() - c
  batches = [
    {k: np.stack([d[k] for d in drawn[j : j + batch]]) for k in drawn[0]}
    for j in range(0, records, batch)
  ]
  c = time.process_time()
  for b in batches:
    aug.map(b)
  augment = time.process_time() - c
  per = lambda s: round(1e3 * s / records, 3)  # noqa: E731
  return {
    "decode_ms": per(decode),
    "two_views_ms": per(views),
    "augment_batch_ms": per(augment),
    "total_ms": per(decode + views + augment),
  }


def _row(r: dict) -> dict:
  r = dict(r)
  r["records_per_s"] = r["records"] / r["wall_s"]
  r["signals_per_s"] = 2 * r["records_per_s"]
  r["cores_used"] = r["cpu_s"] / r["wall_s"]
  r["signals_per_core_s"] = 2 * r["records"] / r["cpu_s"]
  return r


def parse_args(argv: list[str]) -> argparse.Namespace:
  """The flags of `python -m clef_jax.bench input`."""
  parser = cli.ArgumentParser(
    prog="python -m clef_jax.bench input",
    description=__doc__,
    renamed={"batch": "batch_size"},
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  parser.add_argument("--num_records", type=int, default=2000)
  parser.add_argument("--batch_size", dest="batch", type=int, default=64)
  parser.add_argument("--steps", type=int, default=20, help="timed batches per worker setting")
  parser.add_argument("--workers", default="0,1,2")
  parser.add_argument("--data_dir", default=os.path.join(tempfile.gettempdir(), "clef_bench_input"))
  parser.add_argument("--official_items", type=int, default=192)
  parser.add_argument(
    "--encodings",
    default="zlib,bytes",
    help="signal encodings to build and time: bytes (shared schema), zlib",
  )
  parser.add_argument("--json", default=None, help="also write the results here")
  return parser.parse_args(argv)


def run(argv=None) -> None:
  args = parse_args(sys.argv[1:] if argv is None else argv)
  load = quiet.MachineLoad()

  from absl import flags

  flags.FLAGS.mark_as_parsed()  # grain worker processes read absl flags

  from clef_jax import input_pipeline as ip

  rows, archives, stages = [], {}, {}
  for encoding in [e for e in args.encodings.split(",") if e]:
    path, build_s, bytes_per_record = build_archive(args.num_records, args.data_dir, encoding)
    built = "built in {:.1f} s wall, {:.1f} s CPU".format(*build_s) if build_s else "reused"
    print(
      f"archive ({encoding}): {path}  ({built}, {bytes_per_record / 1024:.1f} KiB/record on disk)",
      flush=True,
    )
    archives[encoding] = dict(path=path, build_s=build_s, bytes_per_record=bytes_per_record)
    source = ip.load_data_source(path, split="train")
    if not rows:  # the official path once, from WFDB files of the first archive's records
      with tempfile.TemporaryDirectory(prefix="clef_bench_wfdb_") as tmp:
        paths = write_wfdb_records([source[i] for i in range(16)], tmp)
        rows.append(_row(time_official(paths, args.official_items)))
      print(f"official: {rows[-1]['signals_per_core_s']:.0f} signals/s per core", flush=True)
    for workers in [int(w) for w in args.workers.split(",") if w != ""]:
      row = _row(time_ours(source, args.batch, args.steps, workers))
      row["path"] = f"ours, signal {encoding}"
      rows.append(row)
      print(
        f"ours ({encoding}), {workers} workers: {row['signals_per_core_s']:.0f} signals/s per core",
        flush=True,
      )
    stages[encoding] = stage_breakdown(source, args.batch, 8 * args.batch)

  base = rows[0]["signals_per_core_s"]
  print(
    "\n| path | workers | records/s | signals/s | cores used | signals/s per core | "
    "x official |\n|---|---|---|---|---|---|---|"
  )
  for r in rows:
    print(
      f"| {r['path']} | {r['workers']} | {r['records_per_s']:.0f} | {r['signals_per_s']:.0f} "
      f"| {r['cores_used']:.2f} | {r['signals_per_core_s']:.0f} | "
      f"{r['signals_per_core_s'] / base:.1f} |"
    )
  print(
    "\n| signal encoding | bytes/record | build wall s | build CPU s | decode | TwoViews | "
    "AugmentBatch | total (CPU ms/record) |\n|---|---|---|---|---|---|---|---|"
  )
  for encoding, a in archives.items():
    st, b = stages[encoding], a["build_s"] or (float("nan"), float("nan"))
    print(
      f"| {encoding} | {a['bytes_per_record']:.0f} | {b[0]:.1f} | {b[1]:.1f} | "
      f"{st['decode_ms']:.2f} | {st['two_views_ms']:.2f} | {st['augment_batch_ms']:.2f} | "
      f"{st['total_ms']:.2f} |"
    )
  print(f"\nbatch {args.batch}; {os.cpu_count()} cores visible")
  load_record = load.finish()
  if args.json:
    quiet.write_json(
      args.json,
      dict(rows=rows, stages=stages, archives=archives, batch=args.batch, load=load_record),
    )


if __name__ == "__main__":
  run()
