"""Reading compiled HLO text: collectives, traffic by memory space, the per-instruction bytes."""

import pytest

from clef_jax import hlo

# A compiled-TPU-style module: operands named without shapes, a tuple all-reduce, an async
# all-gather (operand then result in the start's tuple), a loop body and a fusion body.
TEXT = """HloModule m

%fused (p: bf16[8,128]) -> bf16[8,128] {
  %p = bf16[8,128]{1,0} parameter(0)
  ROOT %n = bf16[8,128]{1,0} negate(%p)
}

%body (t: (s32[], f32[256])) -> (s32[], f32[256]) {
  %t = (s32[], f32[256]{0}) parameter(0)
  %i = s32[] get-tuple-element(%t), index=0
  %x = f32[256]{0} get-tuple-element(%t), index=1
  %y = f32[256]{0} fusion(%x), kind=kLoop, calls=%fused, metadata={op_name="jit(train_step)/loop/add"}
  ROOT %r = (s32[], f32[256]{0}) tuple(%i, %y)
}

ENTRY %main (a: bf16[8,128], g: f32[64]) -> bf16[8,128] {
  %a = bf16[8,128]{1,0:T(8,128)(2,1)} parameter(0)
  %g = f32[64]{0} parameter(1)
  %f = bf16[8,128]{1,0:T(8,128)(2,1)} fusion(%a), kind=kLoop, calls=%fused, metadata={op_name="jit(train_step)/stage0_block1/conv1/dot_general"}, backend_config={"estimated_cycles":"700"}
  %h = bf16[8,128]{1,0} fusion(%f), kind=kLoop, calls=%fused, metadata={op_name="jit(train_step)/stage3_block0/conv1/dot_general"}, backend_config={"estimated_cycles":"300"}
  %ar = (f32[64]{0}, bf16[8,128]{1,0}) all-reduce-start(%g, %h), replica_groups={}, to_apply=%fused
  %ard = (f32[64]{0}, bf16[8,128]{1,0}) all-reduce-done(%ar)
  %ag = (f32[64]{0}, f32[256]{0}) all-gather-start(%g), dimensions={0}
  %agd = f32[256]{0} all-gather-done(%ag)
  %w = (s32[], f32[256]{0}) while(%agd), condition=%fused, body=%body
  ROOT %out = bf16[8,128]{1,0} copy(%h)
}
"""


def test_collectives_count_tuples_and_async_results():
  c = hlo.collectives(TEXT)
  assert c["all-reduce"] == {"count": 1, "bytes": 64 * 4 + 8 * 128 * 2}
  assert c["all-gather"] == {"count": 1, "bytes": 256 * 4}


def test_breakdown_looks_operands_up_by_name():
  b = hlo.breakdown(TEXT)
  tile = 8 * 128 * 2
  rows = {r["name"]: r for r in b["top"]}
  assert rows["f"]["bytes"] == 2 * tile and rows["f"]["cycles"] == 700
  assert rows["out"]["bytes"] == 2 * tile
  assert rows["y"]["bytes"] == 2 * 256 * 4  # the loop body, once
  # Blocks of all stages add up under one layer-agnostic name.
  assert b["by_op_name"]["*/conv1/dot_general"] == 4 * tile
  assert b["cycles"]["by_op_name"]["*/conv1/dot_general"] == 1000
  assert b["cycles"]["total"] == 1000
  assert b["total"] == pytest.approx(sum(r["bytes"] for r in b["top"]))


# A prefetch into on-chip memory (S(1)) and an eviction back to HBM around a fusion that reads
# the prefetched buffer and an HBM parameter, and writes its result on chip.
SPACES = """HloModule m

ENTRY %main (a: f32[1024], b: f32[1024]) -> f32[1024] {
  %a = f32[1024]{0:T(1024)} parameter(0)
  %b = f32[1024]{0:T(1024)} parameter(1)
  %cs = (f32[1024]{0:T(1024)S(1)}, f32[1024]{0:T(1024)}, u32[]{:S(2)}) copy-start(%a)
  %cd = f32[1024]{0:T(1024)S(1)} copy-done(%cs)
  %f = f32[1024]{0:T(1024)S(1)} fusion(%cd, %b), kind=kLoop, calls=%add
  %es = (f32[1024]{0:T(1024)}, f32[1024]{0:T(1024)S(1)}, u32[]{:S(2)}) copy-start(%f)
  %ed = f32[1024]{0:T(1024)} copy-done(%es)
  %h = f32[1024]{0:T(1024)S(5)} copy(%ed)
  ROOT %o = f32[1024]{0:T(1024)} fusion(%ed), kind=kLoop, calls=%neg
}
"""


def test_traffic_tells_memory_spaces_apart():
  kb = 1024 * 4
  # HBM: the prefetch's read of a, the fusion's read of b, the eviction's write, the copy's and
  # the last fusion's reads of it, the last fusion's write. On chip: the prefetch's write, the
  # fusion's read of it and its write, the eviction's read. Host: the copy's write.
  assert hlo.traffic(SPACES) == {
    "total": 11 * kb,
    "hbm": 6 * kb,
    "on_chip": 4 * kb,
    "host": 1 * kb,
  }
  b = hlo.breakdown(SPACES)
  rows = {r["name"]: r for r in b["top"]}
  assert rows["cs"]["bytes"] == 2 * kb and rows["cs"]["hbm_bytes"] == kb
  assert rows["f"]["bytes"] == 3 * kb and rows["f"]["hbm_bytes"] == kb
  assert b["total"] == 11 * kb and b["hbm_total"] == 6 * kb
  assert b["by_opcode"]["copy-start"] == 4 * kb


def test_traffic_without_memory_spaces_is_all_hbm():
  t = hlo.traffic(TEXT)
  assert t["hbm"] == t["total"] == hlo.breakdown(TEXT)["total"] > 0
  assert t["on_chip"] == t["host"] == 0
