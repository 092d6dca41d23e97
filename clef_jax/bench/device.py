"""Accelerator check: the trainer's CLEF step, small and medium, bf16, on this machine's devices.

    python -m clef_jax.bench device [--sizes small,medium] [--batches 256,128] [--length 5000]
        [--steps 30] [--warmup 3] [--num_records 1024] [--workers 8] [--data_dir DIR]
        [--dtype bfloat16] [--peak_tflops X] [--json out.json]

`scripts/device_check.sh` runs it on an NVIDIA machine (about 3 minutes). For each size it builds
the step exactly as `python -m clef_jax.main` does: the size's config with `bf16` ->
`train_setup.make_step` (model, optimiser, CLEF loss), `train.create_sharded_train_state` and
`train.jit_train_step` over a `data` mesh of every device, and batches from
`train_setup.make_train_iterator` (the grain pipeline with its augmentations) over a
`synthetic_ecg` archive built into `--data_dir` (reused when present). It reports:

* **compile s**: `lower().compile()` of the jitted step.
* **resident**: steps/s of the step on one device-resident batch reused every step: what the
  device alone sustains.
* **fed**: steps/s with every batch taken from the pipeline, as the trainer's loop runs (metrics
  read on the host one step late).
* **pipeline alone**: signals/s of a fresh iterator without any step (its start-up buffers
  drained first, as are the fed iterator's before its timed steps).
* **input share**: `1 - fed / resident`, the fraction of a fed step spent waiting for input.
* **host ms/step** (resident and fed): where the host spends a step: waiting for the next batch
  (the pipeline and its host-to-device copy), dispatching the compiled step, and blocked reading
  the previous step's metrics (the device's time shows up there). A fed step slower than its
  resident twin with the time in `wait` is input-bound; with the time in `dispatch` or `sync`
  the batches' transfer or placement slows the device.
* **MFU**: XLA's flop count of the compiled step (per device) x steps/s / the device's peak dense
  bf16 FLOP/s (`device_report.GPU_PEAKS`, or `--peak_tflops`). CPUs have no entry: MFU is left out there.
  On NVIDIA GPUs XLA's count leaves out the convolutions it hands to cuDNN (custom calls), so
  GFLOP/step and MFU there are lower bounds; `python -m clef_jax.plan` gives the full count.

A *signal* is one view of one record: a step on a batch of B pairs trains on 2B signals. The
command prints the load average at its start and end and labels the run `NOT QUIET` when the
1-minute load was above `bench.quiet.QUIET_LOAD` when it started.

`--sizes tiny` is a two-stage `Net1DVariant` for smoke runs (the tests run it on CPU).
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import pathlib
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

from clef_jax import cli
from clef_jax.bench import device_report as report

# Samples per second of the archive the pipeline reads (the model's 10-s windows are 5000).
ARCHIVE_FS = 500.0
# Per size: the default batch in pairs (2B signals per step), sized for one 80+ GB GPU.
DEFAULT_BATCHES = {"tiny": 8, "small": 256, "medium": 128, "large": 32}
STEP_KEYS = ("views", "risk", "rate_meta")


def tiny_variant():
  """Two stages, 8 and 16 channels: a Net1D that compiles in seconds on a CPU."""
  from clef_jax.models import net1d

  return net1d.Net1DVariant(
    base_filters=8, ratio=1.0, filter_list=(8, 16), m_blocks_list=(1, 1), groups_width=4
  )


def parse_args(argv: list[str]) -> argparse.Namespace:
  p = cli.ArgumentParser(
    prog="python -m clef_jax.bench device",
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  p.add_argument("--sizes", default="small,medium", help="comma list of tiny,small,medium,large")
  p.add_argument(
    "--batches",
    default="",
    help=f"comma list of global batches (pairs), one per size; default per size {DEFAULT_BATCHES}",
  )
  p.add_argument("--length", type=int, default=5000, help="samples per view (10 s at 500 Hz)")
  p.add_argument("--steps", type=int, default=30, help="timed steps per mode")
  p.add_argument("--warmup", type=int, default=3, help="untimed steps before each timed mode")
  p.add_argument(
    "--dtype",
    default="bfloat16",
    choices=("bfloat16", "float32"),
    help="compute dtype (params and loss stay float32)",
  )
  p.add_argument("--num_records", type=int, default=1024, help="subjects in the built archive")
  p.add_argument(
    "--workers",
    type=int,
    default=-1,
    help="grain worker processes (-1: CPUs - 2, at most 12; 0: in-process)",
  )
  p.add_argument("--read_threads", type=int, default=2)
  p.add_argument(
    "--data_dir",
    default=os.path.join(tempfile.gettempdir(), "clef_bench_device"),
    help="where the synthetic archive is built (reused when already there)",
  )
  p.add_argument(
    "--peak_tflops",
    type=float,
    default=0.0,
    help="peak bf16 TFLOP/s per device for MFU (0: from the device table)",
  )
  p.add_argument("--json", default=None, help="also write the results to this JSON file")
  args = p.parse_args(argv)
  args.sizes = [s for s in args.sizes.split(",") if s]
  bad = [s for s in args.sizes if s not in DEFAULT_BATCHES]
  if bad:
    p.error(f"unknown size(s) {bad}; choose from {sorted(DEFAULT_BATCHES)}")
  try:
    batches = [int(b) for b in args.batches.split(",") if b]
  except ValueError:
    p.error(f"--batches must be integers, got {args.batches!r}")
  if batches and len(batches) != len(args.sizes):
    p.error(f"--batches has {len(batches)} entries for {len(args.sizes)} sizes")
  args.batches = batches or [DEFAULT_BATCHES[s] for s in args.sizes]
  for name in ("length", "steps", "num_records"):
    if getattr(args, name) < 1:
      p.error(f"--{name} must be >= 1")
  if min(args.batches) < 1:
    p.error("--batches must be >= 1")
  if args.workers < 0:
    args.workers = max(0, min(12, (os.cpu_count() or 1) - 2))
  return args


def make_config(
  size: str,
  *,
  batch: int,
  length: int,
  dtype: str,
  workers: int,
  read_threads: int,
  num_records: int,
  data_dir: str,
):
  """The size's training config (`configs/<size>.py`), on a synthetic archive of `length`."""
  from clef_jax.configs import base

  config = base.get_config(
    "bf16" if dtype == "bfloat16" else None, size="small" if size == "tiny" else size
  )
  if size == "tiny":
    with config.ignore_type():  # A Net1DVariant where the config holds a size name.
      config.model.size = tiny_variant()
  config.input.dataset = "synthetic_ecg"
  config.input.auto_build = True
  config.input.data_dir = data_dir
  config.input.build = {
    "num_subjects": num_records,
    "seed": 0,
    "duration_s": max(1.0, math.ceil(length / ARCHIVE_FS * 10) / 10),
  }
  config.input.window = length
  config.input.batch_size = batch
  config.input.num_workers = workers
  config.input.read_threads = read_threads
  return config


def _timed(step, state, batches: Iterator[dict], rng, steps: int) -> tuple[Any, dict[str, float]]:
  """Runs `steps` steps like the trainer's loop (host reads each step's metrics one step late).

  Returns `(state, timing)`: `seconds` in all, and where the host spent them: `wait_s` in
  `next(batches)` (the input pipeline, host-to-device copy included), `dispatch_s` in the step
  call (tracing-free dispatch of the compiled step), `sync_s` reading the previous step's metrics
  (the host blocked on the device), plus the last `loss`.
  """
  import jax

  pending = None
  wait = dispatch = sync = 0.0
  start = time.perf_counter()
  for _ in range(steps):
    t0 = time.perf_counter()
    batch = next(batches)
    t1 = time.perf_counter()
    state, metrics = step(state, batch, rng)
    t2 = time.perf_counter()
    if pending is not None:
      jax.device_get(pending)
    t3 = time.perf_counter()
    wait, dispatch, sync = wait + t1 - t0, dispatch + t2 - t1, sync + t3 - t2
    pending = metrics
  t0 = time.perf_counter()
  last = jax.device_get(pending)
  end = time.perf_counter()
  timing = dict(seconds=end - start, wait_s=wait, dispatch_s=dispatch, sync_s=sync + end - t0)
  return state, dict(timing, loss=float(last["loss"]))


def _with_breakdown(rates: dict[str, Any], timing: dict[str, float], steps: int) -> dict:
  """`rates` plus the per-step milliseconds of `_timed`'s breakdown (`ms_per_step`)."""
  keys = ("wait", "dispatch", "sync")
  return dict(rates, ms_per_step={k: 1e3 * timing[f"{k}_s"] / steps for k in keys})


def _buffered(args: argparse.Namespace) -> int:
  """Batches the iterator can hold ready: one per worker process plus the device prefetch."""
  return args.workers + 2


def _drain(it: Iterator[dict], n: int) -> None:
  """Takes `n` batches off `it`, each one on the device."""
  import jax

  for _ in range(n):
    jax.block_until_ready(next(it)["views"])


def measure(size: str, batch: int, args: argparse.Namespace) -> dict[str, Any]:
  """Compiles and times one size: resident batch, pipeline-fed steps, the pipeline alone."""
  import jax

  from clef_jax import input_pipeline, train
  from clef_jax import sharding as sharding_lib
  from clef_jax import train_setup as setup

  config = make_config(
    size,
    batch=batch,
    length=args.length,
    dtype=args.dtype,
    workers=args.workers,
    read_threads=args.read_threads,
    num_records=args.num_records,
    data_dir=args.data_dir,
  )
  num_devices = jax.device_count()
  if batch % num_devices:
    raise ValueError(
      f"--batches: {batch} pairs for {size} is not divisible by the {num_devices} devices."
    )
  mesh = sharding_lib.make_mesh(num_devices)
  dataset_dir = setup.resolve_train_dataset(config.input, pathlib.Path(args.data_dir))
  source = input_pipeline.load_data_source(os.fspath(dataset_dir), split=config.input.split)
  if len(source) < batch:
    raise ValueError(
      f"--num_records: the archive's train split has {len(source)} records, fewer "
      f"than one batch of {batch}."
    )
  model, tx, step_fn = setup.make_step(config, mesh, len(source) // batch)
  init_rng, step_rng = jax.random.split(jax.random.key(config.seed))
  state, state_sharding = train.create_sharded_train_state(
    init_rng,
    mesh=mesh,
    strategy=config.mesh.strategy,
    fsdp_min_size=config.mesh.fsdp_min_size,
    **setup.state_kwargs(config, model, tx),
  )
  jitted = train.jit_train_step(step_fn, mesh=mesh, state_sharding=state_sharding)
  it = setup.make_train_iterator(config, source, mesh)
  first = next(it)
  resident = {k: first[k] for k in STEP_KEYS}
  jax.block_until_ready(resident)

  t0 = time.perf_counter()
  compiled = jitted.lower(state, resident, step_rng).compile()
  compile_s = time.perf_counter() - t0
  flops = _cost(compiled, "flops")
  memory = _memory(compiled)

  same = itertools.repeat(resident)
  fed = ({k: b[k] for k in STEP_KEYS} for b in it)
  state, _ = _timed(compiled, state, same, step_rng, args.warmup)
  state, resident_t = _timed(compiled, state, same, step_rng, args.steps)
  # While the step compiled and ran on the resident batch, the workers filled their buffers:
  # drain them first, or the fed steps would be timed on batches made before the clock started.
  _drain(it, _buffered(args))
  state, _ = _timed(compiled, state, fed, step_rng, args.warmup)
  state, fed_t = _timed(compiled, state, fed, step_rng, args.steps)
  loss = fed_t["loss"]
  getattr(it, "close", lambda: None)()  # Stops grain's worker processes.
  # The pipeline alone, on a fresh iterator (same seed and workers), its start-up buffers drained.
  alone = setup.make_train_iterator(config, source, mesh)
  _drain(alone, 1 + _buffered(args))
  start = time.perf_counter()
  _drain(alone, args.steps)
  pipeline_s = time.perf_counter() - start
  getattr(alone, "close", lambda: None)()

  signals = 2 * batch
  row: dict[str, Any] = {
    "size": size,
    "batch_pairs": batch,
    "signals_per_step": signals,
    "length": args.length,
    "dtype": args.dtype,
    "devices": num_devices,
    "workers": args.workers,
    "compile_s": compile_s,
    "flops_per_step_per_device": flops,
    "memory": memory,
    "resident": _with_breakdown(
      report.rates(resident_t["seconds"], args.steps, signals), resident_t, args.steps
    ),
    "fed": _with_breakdown(report.rates(fed_t["seconds"], args.steps, signals), fed_t, args.steps),
    "pipeline_alone": report.rates(pipeline_s, args.steps, signals),
    "final_loss": loss,
    "loss_finite": math.isfinite(loss),
  }
  row["input_share"] = max(0.0, 1.0 - row["fed"]["steps_per_s"] / row["resident"]["steps_per_s"])
  stats = jax.local_devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    row["device_peak_bytes"] = int(stats["peak_bytes_in_use"])
  return row


def _cost(compiled, key: str) -> float | None:
  try:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost[key])
  except Exception:  # noqa: BLE001 -- cost analysis is best effort per backend.
    return None


def _memory(compiled) -> dict[str, int] | None:
  try:
    m = compiled.memory_analysis()
  except Exception:  # noqa: BLE001 -- not every backend implements it.
    return None
  if m is None:
    return None
  return {k: int(getattr(m, f"{k}_size_in_bytes", 0)) for k in ("argument", "output", "temp")}


def run(argv: list[str] | None = None) -> dict[str, Any]:
  """CLI entry (`python -m clef_jax.bench device`); prints the table, returns the results."""
  args = parse_args(sys.argv[1:] if argv is None else argv)
  from clef_jax.bench import quiet

  load = quiet.MachineLoad()
  from absl import flags

  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()  # grain worker processes read absl flags
  import jax

  dev = jax.devices()[0]
  peak = (
    (args.peak_tflops, "--peak_tflops") if args.peak_tflops else report.gpu_peak(dev.device_kind)
  )
  if dev.platform == "cpu" and not args.peak_tflops:
    peak = None
  env = {
    "device_kind": dev.device_kind,
    "platform": dev.platform,
    "device_count": jax.device_count(),
    "jax": jax.__version__,
    "cpus": os.cpu_count(),
    "python": sys.version.split()[0],
    "peak_tflops_per_device": peak[0] if peak else None,
    "peak_source": peak[1] if peak else None,
  }
  print(
    f"devices: {jax.device_count()} x {dev.device_kind} ({dev.platform}); jax "
    f"{jax.__version__}; peak bf16 "
    f"{f'{peak[0]:g} TFLOP/s ({peak[1]})' if peak else 'unknown (no MFU)'}",
    flush=True,
  )
  rows = []
  for size, batch in zip(args.sizes, args.batches):
    print(
      f"{size}: batch {batch} pairs, L={args.length}, {args.dtype}, {args.workers} workers",
      flush=True,
    )
    row = measure(size, batch, args)
    report.add_mfu(row, peak[0] if peak else None)
    rows.append(row)
    print(
      f"{size}: compiled in {row['compile_s']:.1f} s; resident "
      f"{row['resident']['steps_per_s']:.2f} steps/s, fed {row['fed']['steps_per_s']:.2f} "
      f"steps/s",
      flush=True,
    )
  results = {
    "config": {k: v for k, v in vars(args).items() if k != "json"},
    "env": env,
    "rows": rows,
  }
  print(report.format_table(rows))
  print(report.format_breakdown(rows))
  print(
    f"signals/s count both views of every pair (2B per step); {args.steps} timed steps per "
    f"mode after {args.warmup} warm-up steps; input share = 1 - fed / resident steps/s."
  )
  if env["platform"] == "gpu":
    print("GFLOP/step and MFU are lower bounds on GPU: XLA's count leaves out cuDNN convolutions.")
  results["load"] = load.finish()
  if args.json:
    quiet.write_json(args.json, results)
    print(f"wrote {args.json}")
  return results


if __name__ == "__main__":
  run()
