"""Model benchmark: the JAX backbone vs its PyTorch twin, on the same CPU, in one run.

    python -m clef_jax.bench model --size small --batch_size 64 --length 5000 \
        [--backbone net1d|msformer] [--versus net1d|msformer] [--steps 10] [--warmup 2] \
        [--threads 2] [--conv_impl auto] [--modes infer,train] [--json out.json]

Two workloads, each timed for JAX (jitted, CPU) and for the PyTorch twin
(`clef_jax.export.TorchNet1D` / `TorchMSFormer`, loaded with the *same* weights):

* **infer**: one forward pass of `--batch` signals (torch under `inference_mode`).
* **train**: one optimiser step on `--batch` *pairs*, i.e. 2B signals: forward of the (2B, L, 1)
  batch (view-1 rows then view-2 rows), plain InfoNCE with tau = 0.07 over the (2B, D)
  embeddings, backward, AdamW (lr 1e-4, weight decay 5e-4, as the reference recipe).

"Signals/s" counts every signal that goes through the network per second of wall time: B per
inference step, 2B per training step (each of those 2B signals goes through forward and backward).
Steps of the two frameworks are *interleaved* (JAX step, torch step, JAX step, ...) so that both
see the same background load on a shared machine; the reported rate uses the median step time
after `--warmup` untimed steps. JAX compile time is the `lower().compile()` time of each jitted
function, measured separately from the steps. Forward GFLOP per signal come from XLA's cost
analysis of the lowered forward pass (a training step costs about 3x that).

`--versus` (default `net1d` when `--backbone msformer`) also times the other JAX backbone of the same
size, interleaved in the same run, and prints a second table: the two backbones' signals/s, their
ratio, and their FLOPs per signal.

`--threads N` sets torch's intra-op threads and, when N is below the number of CPUs this process
may use, pins the whole process (hence JAX's XLA thread pool too) to N CPUs before JAX starts.

`--host_allocator cache` (the default, as in the trainer) re-runs the command once with
`clef_jax.allocator`'s caching allocator preloaded; it serves both frameworks, and the header
line says which allocator the run had. `--host_allocator system` measures glibc's malloc.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from clef_jax import allocator, cli
from clef_jax.bench import quiet, tables, twin

# Default AdamW hyper-parameters of the CLEF pretraining recipe (docs/method.md §E.1).
LEARNING_RATE = 1e-4
WEIGHT_DECAY = 5e-4
TEMPERATURE = 0.07


def parse_args(argv: list[str]) -> argparse.Namespace:
  p = cli.ArgumentParser(
    prog="python -m clef_jax.bench model",
    description=__doc__,
    renamed={"batch": "batch_size"},
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  p.add_argument("--size", default="small", choices=("small", "medium", "large"))
  p.add_argument("--backbone", default="net1d", choices=("net1d", "msformer"))
  p.add_argument(
    "--versus",
    default=None,
    choices=("net1d", "msformer"),
    help="also time this other JAX backbone of the same size, interleaved in the "
    "same run (default for msformer: net1d)",
  )
  p.add_argument(
    "--batch_size",
    dest="batch",
    type=int,
    default=64,
    help="signals per inference step; pairs (2B signals) per training step",
  )
  p.add_argument("--length", type=int, default=5000, help="samples per signal (10 s at 500 Hz)")
  p.add_argument("--in_channels", type=int, default=1)
  p.add_argument("--steps", type=int, default=10, help="timed steps per framework and mode")
  p.add_argument("--warmup", type=int, default=2, help="untimed steps before timing")
  p.add_argument("--threads", type=int, default=2, help="torch threads; pins the process to N CPUs")
  p.add_argument("--modes", default="infer,train", help="comma list of infer,train")
  p.add_argument("--frameworks", default="jax,torch", help="comma list of jax,torch")
  p.add_argument(
    "--conv_impl",
    default="auto",
    help="Net1D grouped-conv implementation (see conv_cpu.GROUPED_CONV_IMPLS)",
  )
  p.add_argument(
    "--dtype",
    default="float32",
    choices=("float32", "bfloat16"),
    help="JAX compute dtype (params stay float32); torch always runs float32",
  )
  p.add_argument(
    "--host_allocator",
    default="cache",
    choices=allocator.CHOICES,
    help="cache: re-run under clef_jax.allocator's caching allocator (both frameworks; the "
    "trainer's default); system: glibc malloc. Applies to the command line only: a caller of "
    "run() gets the allocator its own process has",
  )
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--json", default=None, help="also write the results to this JSON file")
  args = p.parse_args(argv)
  args.modes = [m for m in args.modes.split(",") if m]
  args.frameworks = [f for f in args.frameworks.split(",") if f]
  if args.versus is None and args.backbone == "msformer":
    args.versus = "net1d"
  if args.versus == args.backbone:
    args.versus = None
  bad = set(args.modes) - {"infer", "train"} | set(args.frameworks) - {"jax", "torch"}
  if bad:
    p.error(f"unknown mode/framework {sorted(bad)}")
  return args


def pin_threads(threads: int) -> list[int]:
  """Restricts this process to `threads` CPUs (before XLA sizes its thread pool)."""
  cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
  if cpus and threads < len(cpus):
    cpus = cpus[:threads]
    os.sched_setaffinity(0, cpus)
  return cpus


def cpu_name() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


# ---------------------------------------------------------------------------------------------
# JAX side.
# ---------------------------------------------------------------------------------------------


def forward_gflop(args: argparse.Namespace) -> float:
  """Forward GFLOP of one signal: XLA's cost analysis of the lowered (uncompiled) forward.

  Net1D is lowered with `conv_impl="xla"`, so the count is the model's own multiply-adds, not
  those of a CPU formulation (polyphase also multiplies zeros of its banded kernel).
  """
  import jax
  import jax.numpy as jnp

  from clef_jax import models

  kwargs = {"conv_impl": "xla"} if args.backbone == "net1d" else {}
  model = models.create_backbone(args.backbone, args.size, in_channels=args.in_channels, **kwargs)
  x = jax.ShapeDtypeStruct((1, args.length, args.in_channels), jnp.float32)
  params = jax.eval_shape(model.init, jax.random.key(0), x)
  try:
    cost = jax.jit(lambda p, x: model.apply(p, x)[0]).lower(params, x).cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost["flops"]) / 1e9
  except Exception:  # noqa: BLE001 -- cost analysis is best effort.
    return float("nan")


def build_jax(args: argparse.Namespace) -> dict[str, Any]:
  """Model, params and the two compiled step functions (with their compile times)."""
  import jax
  import jax.numpy as jnp
  import optax

  from clef_jax import losses, models

  kwargs = {"conv_impl": args.conv_impl} if args.backbone == "net1d" else {}
  model = models.create_backbone(
    args.backbone, args.size, in_channels=args.in_channels, dtype=jnp.dtype(args.dtype), **kwargs
  )
  dummy = jnp.zeros((1, args.length, args.in_channels), jnp.float32)
  params = jax.jit(model.init)(jax.random.key(args.seed), dummy)["params"]
  tx = optax.adamw(LEARNING_RATE, weight_decay=WEIGHT_DECAY)

  def embed(p, x):
    return model.apply({"params": p}, x)[0]

  def loss_fn(p, x):
    return losses.info_nce(embed(p, x), temperature=TEMPERATURE)

  def train_step(p, opt_state, x):
    loss, grads = jax.value_and_grad(loss_fn)(p, x)
    updates, opt_state = tx.update(grads, opt_state, p)
    return optax.apply_updates(p, updates), opt_state, loss

  out = {
    "model": model,
    "params": params,
    "compile_s": {},
    "forward_gflop_per_signal": forward_gflop(args),
  }
  rng = np.random.default_rng(args.seed)
  if "infer" in args.modes:
    x = jnp.asarray(rng.standard_normal((args.batch, args.length, args.in_channels), np.float32))
    t0 = time.perf_counter()
    fwd = jax.jit(embed).lower(params, x).compile()
    out["compile_s"]["infer"] = time.perf_counter() - t0
    out["infer"] = lambda: fwd(params, x).block_until_ready()
  if "train" in args.modes:
    x2 = jnp.asarray(
      rng.standard_normal((2 * args.batch, args.length, args.in_channels), np.float32)
    )
    # Own copies: the step donates its parameter and optimiser buffers.
    state = {"p": jax.tree.map(jnp.copy, params)}
    state["o"] = tx.init(state["p"])
    t0 = time.perf_counter()
    step = jax.jit(train_step, donate_argnums=(0, 1)).lower(state["p"], state["o"], x2).compile()
    out["compile_s"]["train"] = time.perf_counter() - t0

    def run_train():
      state["p"], state["o"], loss = step(state["p"], state["o"], x2)
      return float(loss)

    out["train"] = run_train
  return out


# ---------------------------------------------------------------------------------------------
# Timing and report.
# ---------------------------------------------------------------------------------------------


def time_interleaved(
  fns: dict[str, Callable[[], Any]], steps: int, warmup: int
) -> dict[str, list[float]]:
  """Runs the callables in turn, `warmup` untimed rounds then `steps` timed ones."""
  times: dict[str, list[float]] = {k: [] for k in fns}
  for i in range(warmup + steps):
    for name, fn in fns.items():
      t0 = time.perf_counter()
      fn()
      dt = time.perf_counter() - t0
      if i >= warmup:
        times[name].append(dt)
  return times


def summarize(times: list[float], signals: int) -> dict[str, float]:
  med = statistics.median(times)
  return {
    "median_step_s": med,
    "signals_per_s": signals / med,
    "min_step_s": min(times),
    "max_step_s": max(times),
    "steps": len(times),
  }


def format_table(results: dict[str, Any]) -> str:
  rows = [
    (
      "mode",
      "signals/step",
      "JAX sig/s",
      "torch sig/s",
      "JAX/torch",
      "JAX compile s",
      "JAX step s [min-max]",
      "torch step s [min-max]",
    )
  ]
  for mode, r in results["modes"].items():
    j, t = r.get("jax"), r.get("torch")
    rows.append(
      (
        mode,
        str(r["signals_per_step"]),
        f"{j['signals_per_s']:.1f}" if j else "-",
        f"{t['signals_per_s']:.1f}" if t else "-",
        f"{r['ratio']:.2f}x" if r.get("ratio") else "-",
        f"{j['compile_s']:.1f}" if j else "-",
        f"{j['median_step_s']:.3f} [{j['min_step_s']:.3f}-{j['max_step_s']:.3f}]" if j else "-",
        f"{t['median_step_s']:.3f} [{t['min_step_s']:.3f}-{t['max_step_s']:.3f}]" if t else "-",
      )
    )
  return tables.text_table(rows)


def format_versus_table(results: dict[str, Any], backbone: str, versus: str) -> str:
  """JAX backbone vs JAX `versus` backbone (same size, same run): rate and FLOPs per signal."""
  rows = [
    (
      "mode",
      f"{backbone} sig/s",
      f"{versus} sig/s",
      f"{backbone}/{versus}",
      f"{backbone} fwd GFLOP/signal",
      f"{versus} fwd GFLOP/signal",
    )
  ]
  for mode, r in results["modes"].items():
    j, v = r.get("jax"), r.get("versus")
    if not (j and v):
      continue
    rows.append(
      (
        mode,
        f"{j['signals_per_s']:.1f}",
        f"{v['signals_per_s']:.1f}",
        f"{r['versus_ratio']:.2f}x",
        f"{j['forward_gflop_per_signal']:.3f}",
        f"{v['forward_gflop_per_signal']:.3f}",
      )
    )
  return tables.text_table(rows)


def run(argv: list[str] | None = None) -> dict[str, Any]:
  args = parse_args(sys.argv[1:] if argv is None else argv)
  if argv is None:  # The command line: may replace this process with the same command.
    allocator.reexec_preloaded(args.host_allocator)
  load = quiet.MachineLoad()
  cpus = pin_threads(args.threads)  # Before JAX creates its CPU client.
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  import jax

  env = {
    "cpu": cpu_name(),
    "cpus_visible": len(cpus) or os.cpu_count(),
    "threads": args.threads,
    "jax": jax.__version__,
    "jax_backend": jax.default_backend(),
    "python": sys.version.split()[0],
    "host_allocator": "cache" if allocator.active() else "system",
  }
  jax_side = build_jax(args) if "jax" in args.frameworks or "torch" in args.frameworks else {}
  versus_side = {}
  if args.versus:
    versus_args = argparse.Namespace(**{**vars(args), "backbone": args.versus})
    versus_side = build_jax(versus_args)
  if args.backbone == "net1d":
    from clef_jax.models import conv_cpu

    env["conv_impl"] = conv_cpu.resolve_conv_impl(args.conv_impl)  # Logs a fallback once.
    if env["conv_impl"] in conv_cpu.ONEDNN_IMPLS:
      from clef_jax.models import onednn

      if not onednn.available():  # The run then measures "cpu": the results say so.
        env["conv_impl"] += "->cpu"
  torch_side = {}
  if "torch" in args.frameworks:
    import torch

    env["torch"] = torch.__version__
    env["torch_threads"] = torch.get_num_threads()
    torch_side = twin.build_torch(
      args,
      jax_side["params"],
      learning_rate=LEARNING_RATE,
      weight_decay=WEIGHT_DECAY,
      temperature=TEMPERATURE,
    )
    env["parity_max_abs_diff"] = twin.parity(args, jax_side, torch_side)

  results: dict[str, Any] = {
    "config": {k: v for k, v in vars(args).items() if k != "json"},
    "env": env,
    "modes": {},
  }
  for mode in args.modes:
    fns = {}
    if "jax" in args.frameworks:
      fns["jax"] = jax_side[mode]
    if "torch" in args.frameworks:
      fns["torch"] = torch_side[mode]
    if versus_side:
      fns["versus"] = versus_side[mode]
    times = time_interleaved(fns, args.steps, args.warmup)
    signals = args.batch * (2 if mode == "train" else 1)
    r: dict[str, Any] = {"signals_per_step": signals}
    for name, ts in times.items():
      r[name] = summarize(ts, signals)
      r[name]["step_times_s"] = ts
    if "jax" in r:
      r["jax"]["compile_s"] = jax_side["compile_s"][mode]
      r["jax"]["forward_gflop_per_signal"] = jax_side["forward_gflop_per_signal"]
    if "versus" in r:
      r["versus"]["backbone"] = args.versus
      r["versus"]["compile_s"] = versus_side["compile_s"][mode]
      r["versus"]["forward_gflop_per_signal"] = versus_side["forward_gflop_per_signal"]
      if "jax" in r:
        r["versus_ratio"] = r["jax"]["signals_per_s"] / r["versus"]["signals_per_s"]
    if "jax" in r and "torch" in r:
      r["ratio"] = r["jax"]["signals_per_s"] / r["torch"]["signals_per_s"]
    results["modes"][mode] = r

  print(
    f"{args.backbone}-{args.size}  L={args.length}  batch={args.batch} "
    f"(train: {args.batch} pairs = {2 * args.batch} signals)  dtype={args.dtype}  "
    f"conv_impl={env.get('conv_impl', '-')}"
  )
  print(
    f"{env['cpu']}, {env['cpus_visible']} CPUs, threads={args.threads}, "
    f"host_allocator={env['host_allocator']}; jax {env['jax']} "
    f"({env['jax_backend']}), torch {env.get('torch', '-')}; "
    f"parity max|dz|={env.get('parity_max_abs_diff', float('nan')):.1e}"
  )
  print(format_table(results))
  if args.versus:
    print(format_versus_table(results, args.backbone, args.versus))
  print(
    "signals/s: every signal through the network per wall second (train: forward + backward "
    f"+ AdamW on 2B signals); medians of {args.steps} interleaved steps after {args.warmup} "
    "warm-up steps."
  )
  results["load"] = load.finish()
  if args.json:
    quiet.write_json(args.json, results)
    print(f"wrote {args.json}")
  return results


if __name__ == "__main__":
  run()
