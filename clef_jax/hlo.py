"""Reading a compiled XLA program's text: collectives, its traffic by memory space, and a
per-instruction bytes breakdown.

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
# An array with its optional layout: `bf16[8,128]{1,0:T(8,128)(2,1)S(1)}`; `S(n)` is the memory
# space (absent: 0, the device's main memory).
_ARRAY = re.compile(_SHAPE.pattern + r"(\{[^}]*\})?")
_SPACE = re.compile(r"S\((\d+)\)")
# XLA's memory space numbers: 0 the device's main memory (HBM), 5 host memory (offloading);
# the others are on-chip (1: the alternate memory TPU prefetches into, VMEM; 2 and 6: sync flags
# and scalar memory).
HOST_MEMORY_SPACE = 5
# `%name = <type> <opcode>(<operands>), attributes`; <type> may be a tuple with spaces.
_INSTR = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*?)\s+([a-z][\w\-]*)\((.*)$")
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_CYCLES = re.compile(r'"estimated_cycles":"(\d+)"')
_LAYER = re.compile(r"stage\d+_block\d+")


def arrays(text: str) -> list[tuple[float, int]]:
  """`(bytes, memory space)` of every array spelled in `text`, layouts read for `S(n)`."""
  out = []
  for dtype, dims, layout in _ARRAY.findall(text):
    n = 1
    for d in filter(None, dims.split(",")):
      n *= int(d)
    space = _SPACE.search(layout)
    out.append((n * DTYPE_BYTES[dtype], int(space.group(1)) if space else 0))
  return out


def shape_sizes(text: str) -> list[float]:
  """Byte sizes of every array shape spelled in `text` (`f32[2,3]` -> 24)."""
  return [nbytes for nbytes, _ in arrays(text)]


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


_NO_TRAFFIC = (  # Not run, or run as the computations they call (counted there).
  "while",
  "call",
  "conditional",
  "parameter",
  "constant",
  "get-tuple-element",
  "tuple",
  "bitcast",
  "after-all",
  "partition-id",
  "replica-id",
)


def _instructions(hlo_text: str) -> list[dict[str, Any]]:
  """Each executed top-level instruction with its bytes, in all and per memory space.

  An instruction reads each operand once and writes its result once (what XLA's cost analysis
  assumes for a fusion). Compiled TPU modules name their operands without shapes, so operand
  arrays are looked up by name. An asynchronous copy (`copy-start`, whose result tuple holds the
  destination, the source and a context) moves one buffer: its source is read in one memory
  space and its destination written in the other, each counted once; an asynchronous all-gather
  or collective-permute lists its operands in its result tuple, counted once. Loop bodies count
  once (not times their trip count).
  """
  results: dict[str, list[tuple[float, int]]] = {}
  for lines in _computations(hlo_text).values():
    for line in lines:
      m = _INSTR.match(line)
      if m:
        results[m.group(1)] = arrays(m.group(2))
  rows = []
  for line in _executed_lines(hlo_text):
    m = _INSTR.match(line)
    if not m:
      continue
    name, result, opcode, rest = m.groups()
    if opcode in _NO_TRAFFIC or opcode.endswith("-done"):
      continue
    operands = rest.split(")", 1)[0]
    if opcode == "copy-start":
      touched = results.get(name, [])[:2]
    elif opcode in ("all-gather-start", "collective-permute-start"):
      touched = results.get(name, [])  # The tuple lists the operands, then the results.
    elif _SHAPE.search(operands):  # Shapes spelled inline (unoptimised / CPU text).
      touched = results.get(name, []) + arrays(operands)
    else:
      touched = results.get(name, []) + [
        a for o in operands.split(",") for a in results.get(o.strip().lstrip("%"), [])
      ]
    spaces: collections.Counter = collections.Counter()
    for nbytes, space in touched:
      spaces[space] += nbytes
    cyc = _CYCLES.search(line)
    op_name = _OP_NAME.search(line)
    rows.append(
      {
        "name": name,
        "opcode": opcode,
        "bytes": float(sum(spaces.values())),
        "hbm_bytes": float(spaces[0]),
        "spaces": spaces,
        "cycles": int(cyc.group(1)) if cyc else 0,
        "shape": result[:80],
        "op_name": op_name.group(1) if op_name else "",
      }
    )
  return rows


def traffic(hlo_text: str) -> dict[str, float]:
  """The bytes the executed instructions read and write, by where they live.

  Returns `{"total", "hbm", "on_chip", "host"}`: `hbm` counts only arrays in the device's main
  memory, the traffic its bandwidth limits; reads and writes of buffers the compiler placed in
  on-chip memory (TPU VMEM prefetches) are `on_chip`. XLA's own "bytes accessed" does not tell
  the memory spaces apart.
  """
  return _traffic(_instructions(hlo_text))


def _traffic(rows: list[dict[str, Any]]) -> dict[str, float]:
  spaces: collections.Counter = collections.Counter()
  for row in rows:
    spaces.update(row["spaces"])
  host = float(spaces.pop(HOST_MEMORY_SPACE, 0.0))
  hbm = float(spaces.pop(0, 0.0))
  on_chip = float(sum(spaces.values()))
  return {"total": hbm + on_chip + host, "hbm": hbm, "on_chip": on_chip, "host": host}


def breakdown(hlo_text: str, top: int = 15) -> dict[str, Any]:
  """Where the bytes go: per top-level instruction, result + operand bytes (see
  `_instructions`), in all and in HBM. Where the compiler annotates its own estimate
  (`"estimated_cycles"` in a TPU instruction's backend_config) it is summed too.

  Returns:
    `{"total": bytes, "hbm_total": bytes, "traffic": traffic(hlo_text), "by_opcode": {opcode:
    bytes}, "by_op_name": {layer-agnostic op_name: bytes}, "hbm_by_op_name": {...}, "cycles":
    {"total": n, "by_op_name": {...}}, "top": [{"name", "opcode", "bytes", "hbm_bytes", "cycles",
    "shape", "op_name"}, ...]}`, the largest first (`top` of each).
  """
  rows = _instructions(hlo_text)
  moved = _traffic(rows)
  by_opcode, by_op_name = collections.Counter(), collections.Counter()
  hbm_by_op_name, cycles_by_op_name = collections.Counter(), collections.Counter()
  for row in rows:
    key = _LAYER.sub("*", row["op_name"].removeprefix("jit(train_step)/"))[:100]
    key = key or f"({row['opcode']})"
    by_opcode[row["opcode"]] += row["bytes"]
    by_op_name[key] += row["bytes"]
    hbm_by_op_name[key] += row["hbm_bytes"]
    cycles_by_op_name[key] += row["cycles"]
  rows.sort(key=lambda r: -r["bytes"])
  top_rows = []
  for row in rows[:top]:
    row = {k: v for k, v in row.items() if k != "spaces"}
    row["op_name"] = row["op_name"][-120:]
    top_rows.append(row)
  return {
    "total": moved["total"],
    "hbm_total": moved["hbm"],
    "traffic": moved,
    "by_opcode": dict(by_opcode.most_common()),
    "by_op_name": dict(by_op_name.most_common(top)),
    "hbm_by_op_name": dict(hbm_by_op_name.most_common(top)),
    "cycles": {
      "total": int(sum(cycles_by_op_name.values())),
      "by_op_name": dict(cycles_by_op_name.most_common(top)),
    },
    "top": top_rows,
  }
