"""What `python -m clef_jax.bench device` reports: GPU peaks, rates, MFU and the table."""

from __future__ import annotations

from typing import Any

from clef_jax.bench import tables

# Dense (no 2:4 sparsity) bf16 tensor-core peak per GPU, TFLOP/s, matched against
# `device_kind` in this order (first substring match wins, so "H100 PCIe" precedes "H100").
# NVIDIA's datasheets quote the sparse figure ("with sparsity"); dense is half of it.
GPU_PEAKS: tuple[tuple[str, float, str], ...] = (
  ("H200 NVL", 835.5, "https://www.nvidia.com/en-us/data-center/h200/ (1,671 sparse)"),
  ("H200", 989.5, "https://www.nvidia.com/en-us/data-center/h200/ (SXM, 1,979 sparse)"),
  ("H100 PCIe", 756.0, "https://www.nvidia.com/en-us/data-center/h100/ (1,513 sparse)"),
  ("H100 NVL", 835.5, "https://www.nvidia.com/en-us/data-center/h100/ (1,671 sparse)"),
  ("H100", 989.5, "https://www.nvidia.com/en-us/data-center/h100/ (SXM, 1,979 sparse)"),
  ("GH200", 989.5, "https://www.nvidia.com/en-us/data-center/grace-hopper-superchip/"),
  ("B200", 2250.0, "https://www.nvidia.com/en-us/data-center/hgx/ (HGX B200, 4.5 PF sparse)"),
  ("A100", 312.0, "https://www.nvidia.com/en-us/data-center/a100/ (624 sparse)"),
  ("L40S", 362.05, "https://www.nvidia.com/en-us/data-center/l40s/ (733 sparse)"),
  ("L40", 181.05, "https://www.nvidia.com/en-us/data-center/l40/ (362.1 sparse)"),
  ("L4", 121.0, "https://www.nvidia.com/en-us/data-center/l4/ (242 sparse)"),
  ("A10", 125.0, "https://www.nvidia.com/en-us/data-center/products/a10-gpu/ (250 sparse)"),
)


def gpu_peak(device_kind: str) -> tuple[float, str] | None:
  """(dense bf16 TFLOP/s, source) of a device kind, or None when the table has no entry."""
  for key, tflops, source in GPU_PEAKS:
    if key.lower() in device_kind.lower():
      return tflops, source
  return None


def rates(seconds: float, steps: int, signals: int) -> dict[str, float]:
  return {
    "seconds": seconds,
    "steps": steps,
    "steps_per_s": steps / seconds,
    "signals_per_s": steps * signals / seconds,
  }


def add_mfu(row: dict[str, Any], peak_tflops: float | None) -> None:
  """Adds `mfu` (resident and fed) to a row, when both the flop count and the peak are known."""
  flops = row["flops_per_step_per_device"]
  if not (flops and peak_tflops):
    return
  row["mfu"] = {
    mode: flops * row[mode]["steps_per_s"] / (peak_tflops * 1e12) for mode in ("resident", "fed")
  }


def format_table(rows: list[dict[str, Any]]) -> str:
  head = (
    "size",
    "batch (pairs)",
    "compile s",
    "resident steps/s",
    "resident sig/s",
    "fed steps/s",
    "fed sig/s",
    "pipeline alone sig/s",
    "input share",
    "GFLOP/step",
    "MFU resident",
    "MFU fed",
  )
  lines = [head]
  for r in rows:
    mfu = r.get("mfu")
    lines.append(
      (
        r["size"],
        str(r["batch_pairs"]),
        f"{r['compile_s']:.1f}",
        f"{r['resident']['steps_per_s']:.2f}",
        f"{r['resident']['signals_per_s']:.0f}",
        f"{r['fed']['steps_per_s']:.2f}",
        f"{r['fed']['signals_per_s']:.0f}",
        f"{r['pipeline_alone']['signals_per_s']:.0f}",
        f"{100 * r['input_share']:.0f} %",
        f"{r['flops_per_step_per_device'] / 1e9:.3g}" if r["flops_per_step_per_device"] else "-",
        f"{100 * mfu['resident']:.1f} %" if mfu else "-",
        f"{100 * mfu['fed']:.1f} %" if mfu else "-",
      )
    )
  return tables.text_table(lines, markdown=True)


def format_breakdown(rows: list[dict[str, Any]]) -> str:
  """Where the host spends each step, resident vs fed (`ms_per_step` of each row)."""
  lines = [("size", "mode", "wait for batch ms", "dispatch ms", "metrics sync ms", "step ms")]
  for r in rows:
    for mode in ("resident", "fed"):
      ms = r[mode]["ms_per_step"]
      lines.append(
        (
          r["size"],
          mode,
          f"{ms['wait']:.1f}",
          f"{ms['dispatch']:.1f}",
          f"{ms['sync']:.1f}",
          f"{1e3 / r[mode]['steps_per_s']:.1f}",
        )
      )
  return "host time per step:\n" + tables.text_table(lines, markdown=True)
