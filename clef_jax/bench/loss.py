"""Loss benchmark: time and N x N memory of `info_nce` and `clef_loss` (value + grad w.r.t. z).

    python -m clef_jax.bench loss [--dim 256] [--max_batch 4096] [--repeats 3] [--json out.json]

For each global batch B (pairs; N = 2B rows) it jits `value_and_grad` of each loss, times the
compiled call (median of `--repeats`), and reads XLA's temp-buffer size from
`compiled.memory_analysis()`. Both losses materialise N x N float32 matrices, so time is
O(N^2 D) (the similarity matmul and its gradient) and memory O(N^2). The table reports
k = temp bytes / (4 N^2), the number of live N x N float32 buffers, and from k at the largest
measured N the largest B whose loss buffers fit a 16 GiB accelerator: 4 k (2B)^2 <= 16 GiB.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from clef_jax import cli, losses
from clef_jax.bench import quiet

BATCHES = (64, 128, 256, 512, 1024, 2048, 4096)
BUDGET_BYTES = 16 * 2**30  # 16 GiB accelerator


def _loss_fns():
  def nce(z, risk):
    del risk
    return losses.info_nce(z)

  def clef(z, risk):
    return losses.clef_loss(z, risk)[0]

  return {"info_nce": nce, "clef_loss": clef}


def _temp_bytes(compiled) -> int | None:
  try:
    stats = compiled.memory_analysis()
  except Exception:  # Not every backend implements it.
    return None
  return None if stats is None else int(getattr(stats, "temp_size_in_bytes", 0)) or None


def measure(name: str, batch: int, dim: int, repeats: int, seed: int = 0) -> dict:
  """Times value+grad of one loss at one global batch size.

  Args:
    name: "info_nce" or "clef_loss".
    batch: B, subjects (pairs) per global batch; N = 2B rows.
    dim: embedding size D.
    repeats: timed calls after the compile; the median is reported.
    seed: numpy seed for the random embeddings and risks.

  Returns:
    dict with batch, n, dim, loss, compile_s, time_ms, temp_bytes, nxn_buffers.
  """
  rng = np.random.default_rng(seed)
  n = 2 * batch
  z = jnp.asarray(rng.normal(size=(n, dim)), jnp.float32)
  risk = rng.uniform(0.5, 30.0, size=batch)
  risk[rng.random(batch) < 0.1] = np.nan
  risk = jnp.asarray(risk, jnp.float32)
  fn = jax.jit(jax.value_and_grad(_loss_fns()[name]))
  t0 = time.perf_counter()
  compiled = fn.lower(z, risk).compile()
  compile_s = time.perf_counter() - t0
  jax.block_until_ready(compiled(z, risk))  # warm-up
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(z, risk))
    times.append(time.perf_counter() - t0)
  temp = _temp_bytes(compiled)
  return {
    "loss": name,
    "batch": batch,
    "n": n,
    "dim": dim,
    "compile_s": compile_s,
    "time_ms": 1e3 * statistics.median(times),
    "temp_bytes": temp,
    "nxn_buffers": None if temp is None else temp / (4.0 * n * n),
  }


def largest_batch(buffers: float, budget: int = BUDGET_BYTES) -> int:
  """Largest B with `buffers` live N x N float32 matrices (N = 2B) within `budget` bytes."""
  return int(math.floor(math.sqrt(budget / (4.0 * buffers)) / 2.0))


def run(argv: list[str] | None = None) -> list[dict]:
  """CLI entry (`python -m clef_jax.bench loss`); prints a table and returns the rows."""
  p = cli.ArgumentParser(
    prog="python -m clef_jax.bench loss",
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  p.add_argument("--dim", type=int, default=256, help="embedding size D")
  p.add_argument("--max_batch", type=int, default=BATCHES[-1], help="largest B (pairs)")
  p.add_argument("--repeats", type=int, default=3, help="timed calls per point (median)")
  p.add_argument("--losses", default="info_nce,clef_loss", help="comma-separated subset")
  p.add_argument("--json", default=None, help="also write the rows to this JSON file")
  args = p.parse_args(sys.argv[1:] if argv is None else argv)
  load = quiet.MachineLoad()

  names = [s.strip() for s in args.losses.split(",") if s.strip()]
  print(
    f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), D = {args.dim}, "
    f"value + grad w.r.t. z, median of {args.repeats}"
  )
  header = (
    f"{'loss':<10} {'B':>5} {'N':>5} {'time ms':>9} {'ms/(N^2 D) x1e6':>16} "
    f"{'temp MiB':>9} {'NxN bufs':>8}"
  )
  print(header)
  print("-" * len(header))
  rows = []
  for name in names:
    for b in [b for b in BATCHES if b <= args.max_batch]:
      r = measure(name, b, args.dim, args.repeats)
      rows.append(r)
      per = r["time_ms"] / (r["n"] ** 2 * r["dim"]) * 1e6
      temp = "n/a" if r["temp_bytes"] is None else f"{r['temp_bytes'] / 2**20:.1f}"
      bufs = "n/a" if r["nxn_buffers"] is None else f"{r['nxn_buffers']:.2f}"
      print(
        f"{name:<10} {b:>5} {r['n']:>5} {r['time_ms']:>9.2f} {per:>16.4f} {temp:>9} {bufs:>8}",
        flush=True,
      )
  print()
  for name in names:
    mine = [r for r in rows if r["loss"] == name]
    if len(mine) >= 2:
      a, z = mine[-2], mine[-1]
      t_exp = math.log(z["time_ms"] / a["time_ms"]) / math.log(z["n"] / a["n"])
      line = f"{name}: time ~ N^{t_exp:.2f} over the last doubling"
      if a["temp_bytes"] and z["temp_bytes"]:
        m_exp = math.log(z["temp_bytes"] / a["temp_bytes"]) / math.log(z["n"] / a["n"])
        k = z["nxn_buffers"]  # at the largest N the O(N D) terms are negligible
        line += (
          f"; memory ~ N^{m_exp:.2f}; with k = {k:.2f} N x N buffers the largest B in "
          f"16 GiB is {largest_batch(k)} (N = {2 * largest_batch(k)})"
        )
      print(line)
  load_record = load.finish()
  if args.json:
    quiet.write_json(args.json, {"rows": rows, "load": load_record})
  return rows


if __name__ == "__main__":
  run()
