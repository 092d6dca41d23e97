"""Reading a compiled XLA program's text: collectives and a per-instruction bytes breakdown.

Both work on `compiled.as_text()` (the optimised, partitioned per-device HLO module), whose
instructions spell their result and operand shapes inline, e.g.

    %all-reduce-start.3 = (f32[1024]{0}, bf16[64,16]{1,0}) all-reduce-start(f32[1024]{0} %a, ...)
    %fusion.12 = bf16[128,2500,64]{2,1,0} fusion(bf16[128,5000,64]{2,1,0} %p), kind=kLoop, ...
"""

from __future__ import annotations

import collections
import re
from typing import Any

COLLECTIVES = (
  "all-reduce",
  "all-gather",
  "reduce-scatter",
  "all-to-all",
  "collective-permute",
  "ragged-all-to-all",
)
DTYPE_BYTES = {
  "pred": 1,
  "s4": 0.5,
  "u4": 0.5,
  "s8": 1,
  "u8": 1,
  "f8e4m3fn": 1,
  "f8e5m2": 1,
  "f8e4m3": 1,
  "f8e4m3b11fnuz": 1,
  "f8e5m2fnuz": 1,
  "f8e4m3fnuz": 1,
  "s16": 2,
  "u16": 2,
  "f16": 2,
  "bf16": 2,
  "s32": 4,
  "u32": 4,
  "f32": 4,
  "s64": 8,
  "u64": 8,
  "f64": 8,
  "c64": 8,
  "c128": 16,
}
_SHAPE = re.compile(
  r"\b(" + "|".join(sorted(DTYPE_BYTES, key=len, reverse=True)) + r")\[([\d,]*)\]"
)
# `%name = <type> <opcode>(<operands>), attributes`; <type> may be a tuple with spaces.
_INSTR = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*?)\s+([a-z][\w\-]*)\((.*)$")
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_CYCLES = re.compile(r'"estimated_cycles":"(\d+)"')
_LAYER = re.compile(r"stage\d+_block\d+")


def shape_sizes(text: str) -> list[float]:
  """Byte sizes of every array shape spelled in `text` (`f32[2,3]` -> 24)."""
  sizes = []
  for dtype, dims in _SHAPE.findall(text):
    n = 1
    for d in filter(None, dims.split(",")):
      n *= int(d)
    sizes.append(n * DTYPE_BYTES[dtype])
  return sizes


def _computations(hlo_text: str) -> dict[str, list[str]]:
  """Computation name -> its instruction lines; the entry computation is keyed `ENTRY`."""
  comps: dict[str, list[str]] = {}
  current = None
  for line in hlo_text.splitlines():
    if line and not line[0].isspace() and line.rstrip().endswith("{"):
      head = line.split("(", 1)[0].split()
      current = "ENTRY" if head and head[0] == "ENTRY" else (head[0].lstrip("%") if head else "")
      comps[current] = []
    elif line.startswith("}"):
      current = None
    elif current is not None:
      comps[current].append(line)
  return comps


def _executed_lines(hlo_text: str) -> list[str]:
  """Instructions the device runs at top level: ENTRY plus loop / conditional / call bodies
  (fusion bodies are inside their fusion instruction and are not listed)."""
  comps = _computations(hlo_text)
  seen, todo, lines = set(), ["ENTRY"], []
  while todo:
    name = todo.pop()
    if name in seen or name not in comps:
      continue
    seen.add(name)
    for line in comps[name]:
      lines.append(line)
      for key in ("body", "condition", "to_apply", "true_computation", "false_computation"):
        m = re.search(rf"\b{key}=%?([\w.\-]+)", line)
        if m and (key != "to_apply" or re.search(r"=\s*\S.*\scall\(", line)):
          todo.append(m.group(1))
      m = re.search(r"branch_computations=\{([^}]*)\}", line)
      if m:
        todo.extend(s.strip().lstrip("%") for s in m.group(1).split(","))
  return lines


def collectives(hlo_text: str) -> dict[str, dict[str, float]]:
  """Collectives of a compiled module: `{kind: {"count": n, "bytes": result bytes}}`.

  Asynchronous pairs (`all-gather-start` / `-done`) count once, at the start. Tuple-shaped
  collectives (several arrays reduced in one op) sum their arrays; an `all-gather-start` /
  `collective-permute-start` tuple lists operands then results (then u32 scalars for the
  permute's contexts), and only the results are counted.
  """
  out: dict[str, dict[str, float]] = {}
  for line in _executed_lines(hlo_text):
    m = _INSTR.match(line)
    if not m:
      continue
    opcode = m.group(3)
    kind = opcode[: -len("-start")] if opcode.endswith("-start") else opcode
    if kind not in COLLECTIVES or opcode.endswith("-done"):
      continue
    sizes = shape_sizes(m.group(2))
    if opcode.endswith("-start") and kind in ("all-gather", "collective-permute"):
      arrays = [s for s in sizes if s > 4] or sizes  # Drop the permute's u32[] contexts.
      sizes = arrays[len(arrays) // 2 :] if len(arrays) > 1 else arrays
    entry = out.setdefault(kind, {"count": 0, "bytes": 0.0})
    entry["count"] += 1
    entry["bytes"] += sum(sizes)
  return out


def breakdown(hlo_text: str, top: int = 15) -> dict[str, Any]:
  """Where the bytes go: per top-level instruction, result + operand bytes.

  This is the HBM traffic each executed instruction implies when every operand is read once and
  the result written once (what XLA's cost analysis assumes for a fusion). Compiled TPU modules
  name their operands without shapes, so operand sizes are looked up by name. Loop bodies count
  once (not times their trip count). Where the compiler annotates its own estimate
  (`"estimated_cycles"` in a TPU instruction's backend_config) it is summed too.

  Returns:
    `{"total": bytes, "by_opcode": {opcode: bytes}, "by_op_name": {layer-agnostic op_name:
    bytes}, "cycles": {"total": n, "by_op_name": {...}}, "top": [{"name", "opcode", "bytes",
    "cycles", "shape", "op_name"}, ...]}`, the largest first (`top` of each).
  """
  sizes: dict[str, float] = {}
  for lines in _computations(hlo_text).values():
    for line in lines:
      m = _INSTR.match(line)
      if m:
        sizes[m.group(1)] = sum(shape_sizes(m.group(2)))
  rows, by_opcode = [], collections.Counter()
  by_op_name, cycles_by_op_name = collections.Counter(), collections.Counter()
  for line in _executed_lines(hlo_text):
    m = _INSTR.match(line)
    if not m:
      continue
    name, result, opcode, rest = m.groups()
    if opcode in (
      "parameter",
      "constant",
      "get-tuple-element",
      "tuple",
      "bitcast",
      "after-all",
      "partition-id",
      "replica-id",
    ) or opcode.endswith("-done"):
      continue
    operands = rest.split(")", 1)[0]
    if _SHAPE.search(operands):  # Shapes spelled inline (unoptimised / CPU text).
      operand_bytes = sum(shape_sizes(operands))
    else:
      operand_bytes = sum(sizes.get(o.strip().lstrip("%"), 0.0) for o in operands.split(","))
    nbytes = sum(shape_sizes(result)) + operand_bytes
    cyc = _CYCLES.search(line)
    cycles = int(cyc.group(1)) if cyc else 0
    op_name = _OP_NAME.search(line)
    op_name = op_name.group(1) if op_name else ""
    key = _LAYER.sub("*", op_name.removeprefix("jit(train_step)/"))[:100] or f"({opcode})"
    rows.append(
      {
        "name": name,
        "opcode": opcode,
        "bytes": nbytes,
        "cycles": cycles,
        "shape": result[:80],
        "op_name": op_name[-120:],
      }
    )
    by_opcode[opcode] += nbytes
    by_op_name[key] += nbytes
    cycles_by_op_name[key] += cycles
  rows.sort(key=lambda r: -r["bytes"])
  return {
    "total": float(sum(by_opcode.values())),
    "by_opcode": dict(by_opcode.most_common()),
    "by_op_name": dict(by_op_name.most_common(top)),
    "cycles": {
      "total": int(sum(cycles_by_op_name.values())),
      "by_op_name": dict(cycles_by_op_name.most_common(top)),
    },
    "top": rows[:top],
  }
