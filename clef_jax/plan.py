r"""`python -m clef_jax.plan`: compile the training step ahead of time and say what it costs.

    python -m clef_jax.plan --config=configs/medium.py:bf16 --topology=v5p:2x2x1 [--batch 256]
        [--json plan.json [--overwrite]] [--breakdown] [--no_fit]
    python -m clef_jax.plan --config=configs/small.py --topology=local

It builds exactly the step `python -m clef_jax.main` runs (`train_setup.make_step` and
`train_setup.make_state`: the config's model, optimiser, method, loss switches, sharding strategy
and remat) and compiles it with `jax.ShapeDtypeStruct`s only, nothing allocated, for a TPU topology description
(`jax.experimental.topologies`; needs libtpu, which compiles for TPUs on any host) or for the
local backend. Per chip it reports the compiled program's memory against the chip's HBM, XLA's
flops and bytes, the program's own traffic by memory space (XLA's bytes count reads and writes of
on-chip memory too, such as TPU VMEM prefetches; the HBM part is what HBM bandwidth limits), the
collectives, a roofline step time (max of compute, HBM and ICI time) with its MFU ceiling on
either count of bytes, the implied signals/s, and the largest per-chip batch that fits.

Exit status: 0 done; 2 bad flags or missing libtpu (one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import sys
from typing import Any

from clef_jax.plan_compile import PlanError, compile_step, target_conv_impl, topology_devices


def load_config(spec: str):
  """`configs/medium.py:bf16,batch=256` -> the ConfigDict (`get_config(arg)` of that file)."""
  from clef_jax import configs  # `configs/NAME.py` names the packaged file outside a checkout.

  try:
    return configs.load(spec)
  except FileNotFoundError as e:
    raise PlanError(f"--config: no such file: {e.filename}") from None
  except ValueError as e:
    raise PlanError(f"--config {spec}: {e}") from None


def _memory(compiled) -> dict[str, float]:
  m = compiled.memory_analysis()
  get = lambda k: float(getattr(m, k, 0) or 0)  # noqa: E731
  out = {
    "argument": get("argument_size_in_bytes"),
    "output": get("output_size_in_bytes"),
    "temp": get("temp_size_in_bytes"),
    "alias": get("alias_size_in_bytes"),
    "code": get("generated_code_size_in_bytes"),
  }
  # Donated state buffers are reused for the new state: aliased bytes are counted once.
  out["total"] = out["argument"] + out["output"] - out["alias"] + out["temp"] + out["code"]
  return out


def _cost(compiled) -> dict[str, float]:
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):  # Older jax: one dict per program.
    cost = cost[0] if cost else {}
  return {"flops": float(cost.get("flops", 0.0)), "bytes": float(cost.get("bytes accessed", 0.0))}


def ici_seconds(coll: dict[str, dict[str, float]], n: int, bandwidth: float) -> float:
  """Ring-algorithm time of the collectives at the chip's ICI bandwidth: an all-reduce moves
  2 (n - 1) / n of its bytes per chip, the other collectives (n - 1) / n."""
  if n <= 1 or bandwidth <= 0:
    return 0.0
  total = 0.0
  for kind, c in coll.items():
    total += c["bytes"] * (2.0 if kind == "all-reduce" else 1.0) * (n - 1) / n
  return total / bandwidth


def plan(
  config,
  *,
  topology: str = "local",
  batch: int | None = None,
  fit: bool = True,
  breakdown: bool = False,
  hlo_path: str = "",
) -> dict[str, Any]:
  """Compiles the trainer's step and returns the per-chip report (see the module docstring)."""
  from clef_jax import chips, hlo

  devices, platform = topology_devices(topology)
  n = config.mesh.num_devices or len(devices)
  global_batch = batch or config.input.batch_size
  compiled, parts, seconds = compile_step(config, devices, platform, global_batch)
  text = compiled.as_text()
  mem, cost = _memory(compiled), _cost(compiled)
  coll = hlo.collectives(text)
  parsed = hlo.breakdown(text) if breakdown else None
  moved = parsed["traffic"] if parsed else hlo.traffic(text)
  per_chip = global_batch // n
  signals = 2 * per_chip  # Two views per subject (pair).
  report: dict[str, Any] = {
    "config": {
      "model": config.model.name,
      "size": str(config.model.size),
      "dtype": config.model.dtype,
      "remat": bool(config.model.remat),
      "method": config.method,
      "strategy": config.mesh.strategy,
      "window": config.input.window,
      "conv_impl": target_conv_impl(config, platform),
    },
    "topology": topology,
    "platform": platform,
    "device_kind": devices[0].device_kind,
    "chips": n,
    "global_batch": global_batch,
    "per_chip_batch": per_chip,
    "signals_per_chip": signals,
    "compile_seconds": seconds,
    "memory": mem,
    "cost": cost,
    "bytes_per_signal": cost["bytes"] / signals,
    "traffic": moved,
    "collectives": coll,
    "state_bytes": float(
      sum(math.prod(x.shape) * x.dtype.itemsize for x in _leaves(parts.abstract_state))
    ),
    "state_bytes_per_chip": state_bytes_per_chip(parts.abstract_state, parts.state_sharding),
  }
  chip = chips.chip_for_topology(topology) if platform == "tpu" else None
  if chip is not None:
    t_flops = cost["flops"] / chip.peak_bf16_flops
    t_hbm = cost["bytes"] / chip.hbm_bandwidth
    t_ici = ici_seconds(coll, n, chip.ici_bandwidth)
    step = max(t_flops, t_hbm, t_ici)
    bound = {t_flops: "compute", t_hbm: "HBM", t_ici: "ICI"}[step]
    # The same bound on the HLO's own HBM traffic (on-chip prefetch copies and reads left out).
    t_moved = moved["hbm"] / chip.hbm_bandwidth
    step_moved = max(t_flops, t_moved, t_ici)
    report["chip"] = {
      "name": chip.name,
      "peak_bf16_flops": chip.peak_bf16_flops,
      "hbm_bytes": chip.hbm_bytes,
      "hbm_bandwidth": chip.hbm_bandwidth,
      "ici_bandwidth": chip.ici_bandwidth,
    }
    report["fits"] = mem["total"] <= chip.hbm_bytes
    report["roofline"] = {
      "compute_s": t_flops,
      "hbm_s": t_hbm,
      "ici_s": t_ici,
      "step_s": step,
      "bound": bound,
      "mfu_ceiling": t_flops / step if step else 0.0,
      "signals_per_s_per_chip": signals / step if step else 0.0,
      "hbm_traffic_s": t_moved,
      "traffic_step_s": step_moved,
      "traffic_mfu_ceiling": t_flops / step_moved if step_moved else 0.0,
      "traffic_signals_per_s_per_chip": signals / step_moved if step_moved else 0.0,
    }
    if fit:
      report["max_per_chip_batch"] = _fit(
        config, devices, platform, global_batch, n, mem, chip.hbm_bytes
      )
  if parsed:
    report["breakdown"] = parsed
  if hlo_path:
    from clef_jax import files

    files.atomic_write_text(pathlib.Path(hlo_path).expanduser(), text)
  return report


def state_bytes_per_chip(abstract_state, state_sharding) -> float:
  """Bytes of one chip's shard of the state (the whole state when replicated), before the
  chip's tiled layout pads small dimensions."""
  import jax

  total = 0.0
  for x, sh in zip(jax.tree.leaves(abstract_state), jax.tree.leaves(state_sharding)):
    total += math.prod(sh.shard_shape(x.shape)) * x.dtype.itemsize
  return total


def _leaves(tree):
  import jax

  return jax.tree.leaves(tree)


def _fit(config, devices, platform, global_batch, n, mem, hbm) -> dict[str, Any]:
  """Largest per-chip batch that fits, from memory's linearity in the batch: a second compile
  at half the per-chip batch (double when it is 1) gives the slope and the fixed part."""
  b1 = global_batch // n
  b2 = b1 // 2 if b1 >= 2 else 2 * b1
  compiled, _, _ = compile_step(config, devices, platform, b2 * n)
  m1, m2 = mem["total"], _memory(compiled)["total"]
  slope = (m1 - m2) / (b1 - b2)
  fixed = m1 - slope * b1
  best = int((hbm - fixed) // slope) if slope > 0 else None
  return {
    "method": f"linear fit of per-chip memory at per-chip batch {b2} and {b1}",
    "bytes_per_pair": slope,
    "fixed_bytes": fixed,
    "per_chip_batch": best,
  }


def format_report(r: dict[str, Any]) -> str:
  """The human-readable table `plan` prints."""
  gib = lambda x: f"{x / 2**30:.2f} GiB"  # noqa: E731
  c = r["config"]
  conv = f", conv {c['conv_impl']}" if c.get("conv_impl") else ""
  lines = [
    f"plan: {c['model']}-{c['size']} {c['method']} {c['dtype']} {c['strategy']}"
    f"{' remat' if c['remat'] else ''}{conv}, window {c['window']}; {r['topology']} "
    f"({r['chips']} x {r['device_kind']}), global batch {r['global_batch']} pairs = "
    f"{r['per_chip_batch']} pairs / {r['signals_per_chip']} signals per chip",
    f"compile: {r['compile_seconds']:.1f} s",
  ]
  m = r["memory"]
  hbm = (
    f" of {gib(r['chip']['hbm_bytes'])} HBM: {'FITS' if r['fits'] else 'DOES NOT FIT'}"
    if "chip" in r
    else ""
  )
  lines.append(
    f"memory / chip: args {gib(m['argument'])}, temp {gib(m['temp'])}, output "
    f"{gib(m['output'])} (aliased {gib(m['alias'])}), total {gib(m['total'])}{hbm}"
  )
  lines.append(
    f"state: {gib(r['state_bytes'])} whole, {gib(r['state_bytes_per_chip'])} per chip "
    f"({r['config']['strategy']})"
  )
  lines.append(
    f"XLA / chip: {r['cost']['flops'] / 1e12:.3f} TFLOP, "
    f"{r['cost']['bytes'] / 1e9:.2f} GB accessed, "
    f"{r['bytes_per_signal'] / 1e6:.1f} MB per signal"
  )
  t = r["traffic"]
  lines.append(
    f"HLO traffic / chip: {t['hbm'] / 1e9:.2f} GB in HBM "
    f"({t['hbm'] / r['signals_per_chip'] / 1e6:.1f} MB per signal), {t['on_chip'] / 1e9:.2f} GB "
    f"on chip, {t['host'] / 1e9:.2f} GB host (each top-level instruction's operands and result, "
    "by memory space)"
  )
  coll = r["collectives"]
  lines.append(
    "collectives: "
    + (
      ", ".join(f"{k} x{v['count']} {v['bytes'] / 1e6:.2f} MB" for k, v in sorted(coll.items()))
      or "none"
    )
  )
  if "roofline" in r:
    f = r["roofline"]
    lines.append(
      f"roofline ({r['chip']['name']}): compute {f['compute_s'] * 1e3:.2f} ms, HBM "
      f"{f['hbm_s'] * 1e3:.2f} ms, ICI {f['ici_s'] * 1e3:.2f} ms -> step >= "
      f"{f['step_s'] * 1e3:.2f} ms ({f['bound']}-bound), MFU ceiling "
      f"{100 * f['mfu_ceiling']:.1f} %, <= {f['signals_per_s_per_chip']:.0f} "
      "signals/s per chip"
    )
    lines.append(
      f"roofline on the HLO's HBM traffic: HBM {f['hbm_traffic_s'] * 1e3:.2f} ms -> step >= "
      f"{f['traffic_step_s'] * 1e3:.2f} ms, MFU ceiling {100 * f['traffic_mfu_ceiling']:.1f} %, "
      f"<= {f['traffic_signals_per_s_per_chip']:.0f} signals/s per chip"
    )
  if "max_per_chip_batch" in r:
    fit = r["max_per_chip_batch"]
    lines.append(
      f"largest per-chip batch that fits: {fit['per_chip_batch']} pairs "
      f"({fit['method']}: {fit['bytes_per_pair'] / 2**20:.2f} MiB per pair + "
      f"{gib(fit['fixed_bytes'])})"
    )
  if "breakdown" in r:
    b = r["breakdown"]
    lines.append(
      f"bytes by opcode (top-level instructions, {b['total'] / 1e9:.2f} GB, "
      f"{b['hbm_total'] / 1e9:.2f} GB of it in HBM): "
      + ", ".join(f"{k} {v / 1e9:.2f}" for k, v in list(b["by_opcode"].items())[:8])
    )
    lines.append("bytes by op_name (all blocks together; GB, in HBM, compiler-estimated cycles):")
    for k, v in b["by_op_name"].items():
      hbm_part = b["hbm_by_op_name"].get(k, 0.0)
      lines.append(
        f"  {v / 1e9:8.3f} GB {hbm_part / 1e9:8.3f} GB "
        f"{b['cycles']['by_op_name'].get(k, 0):>11} cyc  {k[-80:]}"
      )
    lines.append(f"largest instructions (compiler's estimate, all: {b['cycles']['total']} cycles):")
    for row in b["top"]:
      lines.append(
        f"  {row['bytes'] / 1e9:8.3f} GB  {row['opcode']:<14} {row['shape'][:48]:<48}"
        f"  {row['op_name'][-70:]}"
      )
  return "\n".join(lines)


class _Parser(argparse.ArgumentParser):
  def error(self, message):  # One line, exit 2 (argparse prints the usage too).
    print(f"plan: {message} (see --help)", file=sys.stderr)
    sys.exit(2)


def main(argv: list[str] | None = None) -> int:
  p = _Parser(
    prog="python -m clef_jax.plan",
    description=__doc__.split("\n\n")[0],
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  p.add_argument(
    "--config", required=True, help="config file[:options], e.g. configs/medium.py:bf16"
  )
  p.add_argument(
    "--topology",
    default="local",
    help="a TPU topology (v5p:2x2x1, v5litepod-4 style names: v5e:2x2, v6e:2x2, "
    "v4:2x2x1) or 'local' (default)",
  )
  p.add_argument("--batch", type=int, default=None, help="global batch in pairs (default: config)")
  p.add_argument(
    "--json",
    default="",
    help="also write the report to this file (atomic; an existing file is kept unless --overwrite)",
  )
  p.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
  p.add_argument("--breakdown", action="store_true", help="bytes per top-level instruction")
  p.add_argument("--hlo", default="", help="also write the compiled per-chip HLO text here")
  p.add_argument(
    "--no_fit",
    action="store_true",
    help="skip the second compile that finds the largest batch that fits",
  )
  args = p.parse_args(argv)
  if args.batch is not None and args.batch <= 0:
    p.error(f"--batch must be positive; got {args.batch}")
  if args.json:  # Before the compile: the report must have somewhere to go.
    from clef_jax import cli

    try:
      cli.check_output_file(args.json, "--json", overwrite=args.overwrite)
    except cli.UsageError as e:
      p.error(str(e).rstrip("."))
  if args.topology != "local":
    # A deviceless compile: the host's own backend is the CPU (libtpu would otherwise look for
    # a TPU attached to this host first, and print its failure).
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    os.environ.setdefault("TPU_ACCELERATOR_TYPE", "v5litepod-4")
    os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")  # No metadata server off Cloud TPU VMs.
    os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
  try:
    config = load_config(args.config)
    report = plan(
      config,
      topology=args.topology,
      batch=args.batch or None,
      fit=not args.no_fit,
      breakdown=args.breakdown,
      hlo_path=args.hlo,
    )
  except PlanError as e:
    print(f"plan: {e}", file=sys.stderr)
    return 2
  print(format_report(report), flush=True)
  if args.json:
    from clef_jax import files

    path = pathlib.Path(args.json).expanduser()
    files.atomic_write_text(path, json.dumps(report, indent=2) + "\n")
    print(f"json: {path}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
