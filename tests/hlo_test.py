"""Reading compiled HLO text: collectives and the per-instruction bytes breakdown."""

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
