"""Grouped 1-D convolution kernels for Net1D (pure functions on channels-last arrays).

Numerically equivalent implementations of the SAME-padded grouped convolution:
  "xla":       one `lax.conv_general_dilated` with `feature_group_count`. Fast on GPU/TPU; on
               XLA:CPU every group is a strided Eigen sub-problem and the weight gradient is
               rewritten into a much larger dense convolution (3-10x slower than "polyphase").
  "tpu":       "xla" with groups of fewer than 8 input channels merged into groups of 8 or more
               (`_conv_tpu`): the TPU tiles a grouped conv's channels by 8, and narrower groups
               cost a relayout of the activation around every grouped conv in both passes.
  "polyphase": the grouped conv as ONE batched GEMM per layer (`_conv_polyphase`), built for
               XLA:CPU, where large GEMMs are fast (YNNPACK) and grouped convolutions are not.
  "hybrid":    XLA's forward; stride-1 gradients from XLA's dx and `_conv_weight_grad`, stride-2
               ones from polyphase (`_conv_hybrid`).
  "cpu":       per layer, "hybrid" for >= 16 channels per group, else "polyphase".
  "onednn":    oneDNN's convolution primitives (`clef_jax.models.onednn`, the kernels PyTorch's CPU
               convolutions run) for the forward pass and the input gradient; the kernel gradient
               from oneDNN for >= 16 channels per group, else from polyphase (`_conv_onednn`).
               Falls back to "cpu" per layer where oneDNN cannot run (not built, not float32).
  "onednn_fwd": oneDNN's forward pass with the gradients of "cpu" (`_conv_onednn_fwd`): the
               faster inference of "onednn" without its slower narrow-group kernel gradient.
"auto" (the default everywhere) resolves to "tpu" on TPU, "xla" on GPU and "cpu" on CPU, at trace
time ("onednn" is faster per layer and for inference, not for a whole training step:
docs/benchmarks.md has the measurements behind this choice).

The pointwise (1x1) convolution `pointwise_conv` has a CPU-friendly weight gradient as well.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from clef_jax.models import onednn

Array = jax.Array


def same_pads(length: int, kernel_size: int, stride: int) -> tuple[int, int]:
  """`MyConv1dPadSame` padding == TF/JAX SAME: floor(p/2) on the left (docs/method.md §A.2)."""
  out_len = (length + stride - 1) // stride
  p = max(0, (out_len - 1) * stride + kernel_size - length)
  return p // 2, p - p // 2


def auto_conv_impl(platform: str) -> str:
  """What "auto" means on a platform: "cpu" on CPU, "tpu" on TPU, "xla" elsewhere (GPU)."""
  return {"cpu": "cpu", "tpu": "tpu"}.get(platform, "xla")


def resolve_conv_impl(impl: str) -> str:
  """Maps "auto" to the backend's implementation (`auto_conv_impl`); validates explicit names."""
  if impl == "auto":
    return auto_conv_impl(jax.default_backend())
  if impl not in GROUPED_CONV_IMPLS:
    raise ValueError(
      f"Unknown conv_impl {impl!r}; choose 'auto' or one of {sorted(GROUPED_CONV_IMPLS)}."
    )
  if impl in ONEDNN_IMPLS:
    onednn.warn_if_unavailable()  # One line, once: the layers then run "cpu" (`_conv_onednn`).
  return impl


def conv1d_same(x: Array, kernel: Array, *, stride: int, groups: int, impl: str = "auto") -> Array:
  """Grouped 1-D convolution with SAME zero padding.

  Args:
    x: `(B, L, C_in)`.
    kernel: `(K, C_in // groups, C_out)`; output channels are assigned to groups in contiguous
      blocks, like PyTorch.
    stride: the stride (Net1D uses 1 and 2; any positive stride works).
    groups: number of groups.
    impl: "auto", or a key of `GROUPED_CONV_IMPLS` ("xla", "tpu", "polyphase", "hybrid", "cpu",
      "onednn", "onednn_fwd").

  Returns:
    `(B, ceil(L / stride), C_out)`.
  """
  return GROUPED_CONV_IMPLS[resolve_conv_impl(impl)](x, kernel, stride=stride, groups=groups)


def _conv_xla(x: Array, kernel: Array, *, stride: int, groups: int) -> Array:
  pads = same_pads(x.shape[1], kernel.shape[0], stride)
  return lax.conv_general_dilated(
    x,
    kernel,
    window_strides=(stride,),
    padding=(pads,),
    dimension_numbers=("NWC", "WIO", "NWC"),
    feature_group_count=groups,
  )


# The TPU lays out a grouped conv's channels in tiles of 8 per group (bfloat16 packs two rows).
_TPU_MIN_GROUP_CHANNELS = 8


def _tpu_merge_factor(groups: int, in_per_group: int) -> int:
  """The fewest adjacent groups to merge for >= `_TPU_MIN_GROUP_CHANNELS` input channels each
  (a divisor of `groups`; all of them when no smaller divisor reaches it)."""
  for f in range(1, groups + 1):
    if groups % f == 0 and f * in_per_group >= _TPU_MIN_GROUP_CHANNELS:
      return f
  return groups


def _conv_tpu(x: Array, kernel: Array, *, stride: int, groups: int) -> Array:
  """The "xla" conv with every `f` adjacent groups merged into one of `f * C_in/G` inputs.

  The merged kernel is block-diagonal: output channel o of original group j reads only group j's
  inputs, the other entries are exact zeros (a 0/1 mask), so the values are the grouped conv's
  to summation order and the kernel gradient is the masked entries' gradient. It costs `f`
  times the grouped conv's multiply-adds and saves the relayout a TPU makes of each operand
  whose groups are narrower than its channel tile: for Net1D-small (4 channels per group) the
  step's bytes drop by more than the added work costs (docs/benchmarks.md).
  """
  _, in_per_group, cout = kernel.shape
  f = _tpu_merge_factor(groups, in_per_group)
  if f == 1:
    return _conv_xla(x, kernel, stride=stride, groups=groups)
  out_per_group = cout // groups
  rows = np.arange(f * in_per_group)[:, None] // in_per_group  # original group within the merge
  cols = (np.arange(cout)[None, :] // out_per_group) % f
  merged = jnp.tile(kernel, (1, f, 1)) * jnp.asarray(rows == cols, kernel.dtype)
  return _conv_xla(x, merged, stride=stride, groups=groups // f)


@functools.cache
def _polyphase_plan(
  length: int, kernel_size: int, stride: int, phases: int
) -> tuple[int, int, int, int, int]:
  """Static geometry of `_conv_polyphase`: (out_len, pad_left, rows, taps, padded_len)."""
  out_len = (length + stride - 1) // stride
  pad_left, _ = same_pads(length, kernel_size, stride)
  block = stride * phases  # input samples per row
  rows = -(-out_len // phases)  # output rows of `phases` samples each
  # Output t = phases*u + p reads padded inputs stride*t + k = block*(u + j) + r, r < block:
  # j = (stride*p + k) // block < taps.
  taps = (stride * (phases - 1) + kernel_size - 1) // block + 1
  return out_len, pad_left, rows, taps, block * (rows + taps - 1)


@functools.cache
def _polyphase_selector(kernel_size: int, stride: int, phases: int, taps: int) -> np.ndarray:
  """0/1 array (taps, block, phases, K): 1 where tap k = block*j + r - stride*p."""
  block = stride * phases
  sel = np.zeros((taps, block, phases, kernel_size), np.float32)
  for j in range(taps):
    for r in range(block):
      for p in range(phases):
        k = block * j + r - stride * p
        if 0 <= k < kernel_size:
          sel[j, r, p, k] = 1.0
  return sel


def _polyphase_kernel(kernel: Array, *, stride: int, groups: int, phases: int, taps: int) -> Array:
  """(K, Cin/G, Cout) -> (G, block * Cin/G, taps * phases * Cout/G), block = stride * phases.

  Entry [g, (r, c), (j, p, d)] is kernel[block*j + r - stride*p, c, g*Cout/G + d] when that tap
  index is in [0, K), else 0: the banded (block-Toeplitz) matrix that maps one row of `block`
  input samples to the contributions of tap block j to `phases` output samples. Built as a
  product with a constant 0/1 selector (exact: one nonzero term per entry), which compiles to
  one small dot (and one for its gradient) instead of dozens of slices or a gather/scatter.
  """
  k, cig, cout = kernel.shape
  cog, block = cout // groups, stride * phases
  sel = jnp.asarray(_polyphase_selector(k, stride, phases, taps), kernel.dtype)
  w2 = jnp.einsum(
    "jrpk,kcgd->grcjpd", sel, kernel.reshape(k, cig, groups, cog), precision=lax.Precision.HIGHEST
  )
  return w2.reshape(groups, block * cig, taps * phases * cog)


def _polyphase_phases(cout_per_group: int) -> int:
  """Output samples per GEMM row: wide enough rows for narrow groups, little zero-padding else.

  The banded kernel wastes (taps * stride * phases / K - 1) of the multiply-adds on zeros: 1x for
  8 phases, 0.5x for 4 (K = 16). Measured best: 8 for Net1D-small (4 channels per group), 4 for
  medium (16 per group).
  """
  return 8 if cout_per_group <= 4 else 4


def _conv_polyphase(x: Array, kernel: Array, *, stride: int, groups: int) -> Array:
  """SAME grouped conv as one batched GEMM over groups, then a shifted sum (CPU).

  Polyphase form: split the padded input into rows of `block = stride * phases` samples and the
  output into rows of `phases` samples. Output row u is then a sum over `taps` (2 or 3)
  consecutive input rows u + j, each times a fixed (block*Cin/G, phases*Cout/G) matrix per
  group (`_polyphase_kernel`). One GEMM computes every (row, tap) product,
  z[g, u, j] = x2[g, u] @ W[g, :, j], and y[u] = sum_j z[u + j, j]. Compared with im2col
  nothing of input size is duplicated; compared with `feature_group_count` every FLOP runs in a
  large GEMM (and so do both gradients). The extra FLOPs on the band's zeros (see
  `_polyphase_phases`) are cheaper than XLA:CPU's grouped conv. Mathematically identical to
  "xla"; only the summation order differs. Dense convs (groups == 1, the stem) stay on "xla",
  whose dense Eigen convolution is fine.
  """
  if groups == 1:
    return _conv_xla(x, kernel, stride=stride, groups=1)
  b, length, cin = x.shape
  k, cig, cout = kernel.shape
  cog = cout // groups
  phases = _polyphase_phases(cog)
  out_len, pad_left, rows, taps, padded = _polyphase_plan(length, k, stride, phases)
  block = stride * phases
  # Zero-pad (or crop samples no output reads) to `padded`, then group-major rows:
  # (B, L, C) -> (G, B * (rows + taps - 1), block * Cin/G).
  xp = lax.pad(
    x, jnp.zeros((), x.dtype), ((0, 0, 0), (pad_left, padded - length - pad_left, 0), (0, 0, 0))
  )
  x2 = xp.reshape(b, rows + taps - 1, block, groups, cig).transpose(3, 0, 1, 2, 4)
  x2 = x2.reshape(groups, b * (rows + taps - 1), block * cig)
  w2 = _polyphase_kernel(kernel, stride=stride, groups=groups, phases=phases, taps=taps)
  z = lax.dot_general(x2, w2, (((2,), (1,)), ((0,), (0,))))  # (G, B*(rows+taps-1), taps*P*cog)
  z = z.reshape(groups, b, rows + taps - 1, taps, phases * cog)
  y = z[:, :, 0:rows, 0]
  for j in range(1, taps):
    y = y + z[:, :, j : j + rows, j]  # (G, B, rows, P*cog)
  y = y.reshape(groups, b, rows * phases, cog).transpose(1, 2, 0, 3)
  return y.reshape(b, rows * phases, cout)[:, :out_len]


def _conv_weight_grad(x: Array, g: Array, *, kernel_size: int, stride: int, groups: int) -> Array:
  """The kernel gradient of `_conv_xla(x, kernel)` for output gradient `g`, as ONE grouped
  *forward* convolution (CPU).

  dW[k, c, o] = sum_{b, t} xpad[b, stride * t + k, c] * g[b, t, o] (c and o in the same group) is
  itself a grouped convolution: batch = the group's input channel c, spatial = time, features =
  (group, batch b); the "kernel" is g (time taps, in = b, out = (group, o)), dilated by the stride,
  and there are exactly K output positions. Only x needs a new layout, (time, (group, b), c),
  which keeps its channel runs contiguous; g is used as it is. XLA:CPU runs grouped forward
  convolutions well. Its own weight gradient is a batch-grouped convolution, which it rewrites
  into a dense one. The polyphase gradient spends most of its time on layout copies. Measured on
  Net1D-medium's stride-1 layers (batch 16): 2.5-3.3x faster than polyphase's weight gradient.
  Same values up to summation order.
  """
  b, length, cin = x.shape
  cig = cin // groups
  out_len = g.shape[1]
  pad_left, _ = same_pads(length, kernel_size, stride)
  # Exactly K outputs: pad_left + length + pad_right = stride * (out_len - 1) + K.
  pad_right = stride * (out_len - 1) + kernel_size - length - pad_left
  lhs = x.reshape(b, length, groups, cig).transpose(1, 2, 0, 3).reshape(length, groups * b, cig)
  dw = lax.conv_general_dilated(
    lhs,
    g.astype(x.dtype),
    window_strides=(1,),
    padding=((pad_left, pad_right),),
    rhs_dilation=(stride,),
    dimension_numbers=("WCN", "IWO", "NWC"),
    feature_group_count=groups,
  )  # (Cin/G, K, Cout)
  return dw.transpose(1, 0, 2)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_xla_cpu_grads(x: Array, kernel: Array, stride: int, groups: int) -> Array:
  return _conv_xla(x, kernel, stride=stride, groups=groups)


def _conv_xla_cpu_grads_fwd(x, kernel, stride, groups):
  return _conv_xla(x, kernel, stride=stride, groups=groups), (x, kernel)


def _conv_xla_cpu_grads_bwd(stride, groups, res, g):
  x, kernel = res
  if stride == 1:
    # XLA's own input gradient (a grouped convolution again) + the forward-conv weight gradient.
    _, vjp_x = jax.vjp(lambda v: _conv_xla(v, kernel, stride=1, groups=groups), x)
    (dx,) = vjp_x(g)
    dw = _conv_weight_grad(x, g, kernel_size=kernel.shape[0], stride=1, groups=groups)
    return dx, dw.astype(kernel.dtype)
  # Strided: polyphase's joint VJP (its dx and dW share the layout work) measured fastest. The VJP
  # of a linear map needs no forward values: XLA drops the forward GEMM of this vjp.
  _, vjp = jax.vjp(functools.partial(_conv_polyphase, stride=stride, groups=groups), *res)
  return vjp(g)


_conv_xla_cpu_grads.defvjp(_conv_xla_cpu_grads_fwd, _conv_xla_cpu_grads_bwd)


def _conv_hybrid(x: Array, kernel: Array, *, stride: int, groups: int) -> Array:
  """XLA's grouped convolution forward, with the fastest CPU gradients measured (CPU).

  XLA:CPU's grouped convolution is the fastest forward measured (0.5-0.65x the polyphase
  forward's time for Net1D-medium's layers), but its weight gradient is 2-5x slower than
  polyphase's. The gradients here: for stride 1, XLA's input gradient and `_conv_weight_grad`
  (2.2x faster than polyphase's joint VJP on medium's stride-1 layers); for stride 2, the
  polyphase VJP. Values equal "xla" exactly; gradients equal to float32 rounding.
  """
  if groups == 1:
    return _conv_xla(x, kernel, stride=stride, groups=1)
  return _conv_xla_cpu_grads(x, kernel, stride, groups)


# Channels per group from which "cpu" takes "hybrid" rather than "polyphase". Measured (train step,
# interleaved A/B): Net1D-medium (16 per group) +6-10 % with hybrid; Net1D-small (4 per group)
# -25 %, where XLA's grouped forward is slow.
_HYBRID_MIN_CHANNELS_PER_GROUP = 16


def _conv_cpu(x: Array, kernel: Array, *, stride: int, groups: int) -> Array:
  """The CPU default: "hybrid" for wide groups, "polyphase" for narrow ones (per layer)."""
  if kernel.shape[2] // max(groups, 1) >= _HYBRID_MIN_CHANNELS_PER_GROUP:
    return _conv_hybrid(x, kernel, stride=stride, groups=groups)
  return _conv_polyphase(x, kernel, stride=stride, groups=groups)


# Channels per group from which "onednn" takes the kernel gradient from oneDNN. oneDNN runs it as
# im2col + GEMM; for 4 channels per group (Net1D-small) polyphase's is 2-2.5x faster (e.g.
# 1.4 vs 3.2 ms), for 16 (medium) oneDNN's is as fast as the fastest XLA one or faster.
_ONEDNN_WGRAD_MIN_CHANNELS_PER_GROUP = 16


def _with_onednn_forward(bwd: Callable[..., tuple[Array, Array]]) -> Callable[..., Array]:
  """`f(x, kernel, stride, groups)`: oneDNN's forward pass, `bwd(stride, groups, (x, kernel), g)`
  its VJP."""

  @functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
  def conv(x: Array, kernel: Array, stride: int, groups: int) -> Array:
    return onednn.forward(x, kernel, stride=stride, groups=groups)

  def fwd(x, kernel, stride, groups):
    return onednn.forward(x, kernel, stride=stride, groups=groups), (x, kernel)

  conv.defvjp(fwd, bwd)
  return conv


def _onednn_grads(stride, groups, res, g):
  x, kernel = res
  g = g.astype(jnp.float32)
  dx = onednn.backward_data(g, kernel, length=x.shape[1], stride=stride, groups=groups)
  if kernel.shape[2] // groups >= _ONEDNN_WGRAD_MIN_CHANNELS_PER_GROUP:
    dw = onednn.backward_weights(x, g, kernel_size=kernel.shape[0], stride=stride, groups=groups)
  else:
    # Polyphase's kernel gradient alone (XLA drops the unused forward GEMM and input gradient).
    _, vjp = jax.vjp(lambda w: _conv_polyphase(x, w, stride=stride, groups=groups), kernel)
    (dw,) = vjp(g)
  return dx, dw


def _cpu_grads(stride, groups, res, g):
  # "cpu"'s gradients; the VJP of a linear map needs no forward values, so XLA drops the
  # forward pass of this vjp.
  _, vjp = jax.vjp(functools.partial(_conv_cpu, stride=stride, groups=groups), *res)
  return vjp(g.astype(res[0].dtype))


_conv_onednn_vjp = _with_onednn_forward(_onednn_grads)
_conv_onednn_fwd_vjp = _with_onednn_forward(_cpu_grads)


def _conv_onednn(x: Array, kernel: Array, *, stride: int, groups: int) -> Array:
  """oneDNN's forward and input gradient; its kernel gradient for wide groups (CPU).

  oneDNN reads and writes the channels-last activations in place (its `nwc` layout), so unlike
  the XLA formulations no activation-sized layout copy is made; per layer of Net1D-medium its
  forward is 2-2.5x faster than XLA's grouped convolution and its input gradient 1-5x faster
  than the hybrid's (docs/benchmarks.md). Layers oneDNN cannot take (operands not float32, the
  kernels not built) use "cpu". Values equal "xla" up to summation order.
  """
  if not onednn.supports(x, kernel, stride):
    return _conv_cpu(x, kernel, stride=stride, groups=groups)
  return _conv_onednn_vjp(x, kernel, stride, groups)


def _conv_onednn_fwd(x: Array, kernel: Array, *, stride: int, groups: int) -> Array:
  """oneDNN's forward pass, "cpu"'s gradients (CPU); "cpu" where oneDNN cannot run.

  oneDNN's forward is the fastest measured for every Net1D layer (inference 1.2-1.3x the PyTorch
  twin's rate where "cpu" is 0.9-1.05x, docs/benchmarks.md), while its kernel gradient is slower
  than polyphase's for narrow groups; this keeps the one and not the other.
  """
  if not onednn.supports(x, kernel, stride):
    return _conv_cpu(x, kernel, stride=stride, groups=groups)
  return _conv_onednn_fwd_vjp(x, kernel, stride, groups)


# The implementations for accelerators (plain XLA convolutions and dots).
ACCELERATOR_IMPLS = ("xla", "tpu")

# The implementations that run oneDNN's kernels where they are available ("cpu" elsewhere).
ONEDNN_IMPLS = ("onednn", "onednn_fwd")

GROUPED_CONV_IMPLS: dict[str, Callable[..., Array]] = {
  "xla": _conv_xla,
  "tpu": _conv_tpu,
  "polyphase": _conv_polyphase,
  "hybrid": _conv_hybrid,
  "cpu": _conv_cpu,
  "onednn": _conv_onednn,
  "onednn_fwd": _conv_onednn_fwd,
}

# Pointwise (1x1) convolutions with at least this many input or output channels take the
# weight gradient through `_pointwise_cpu` under every CPU implementation (all but
# `ACCELERATOR_IMPLS`).
_WGRAD_TRANSPOSE_MIN_CHANNELS = 256


@jax.custom_vjp
def _pointwise_cpu(x: Array, kernel: Array) -> Array:
  """`x @ kernel` over the last axis, (B, L, Cin) x (Cin, Cout), with a CPU-friendly backward.

  The weight gradient x^T g contracts the major (B*L) axis of both operands; XLA:CPU hands that
  to Eigen at about half the speed of its YNNPACK GEMM, which only takes row-major operands.
  Materialising the transpose of the narrower operand first (the optimization barrier stops XLA
  from folding it back into the dot) lets YNNPACK run it. Identical values up to summation
  order.
  """
  return jnp.einsum("blc,cd->bld", x, kernel)


def _pointwise_cpu_fwd(x, kernel):
  return _pointwise_cpu(x, kernel), (x, kernel)


def _pointwise_cpu_bwd(res, g):
  x, kernel = res
  cin, cout = kernel.shape
  dx = jnp.einsum("bld,cd->blc", g, kernel)
  x2, g2 = x.reshape(-1, cin), g.reshape(-1, cout)
  if cin <= cout:
    xt = lax.optimization_barrier(x2.T)  # (Cin, B*L)
    dw = xt @ g2  # (Cin, Cout)
  else:
    gt = lax.optimization_barrier(g2.T)  # (Cout, B*L)
    dw = (gt @ x2).T
  return dx, dw.astype(kernel.dtype)


_pointwise_cpu.defvjp(_pointwise_cpu_fwd, _pointwise_cpu_bwd)


def pointwise_conv(x: Array, kernel: Array, *, impl: str = "auto") -> Array:
  """1x1 convolution (no bias): (B, L, Cin) x (Cin, Cout) -> (B, L, Cout)."""
  cin, cout = kernel.shape
  if (
    resolve_conv_impl(impl) not in ACCELERATOR_IMPLS
    and max(cin, cout) >= _WGRAD_TRANSPOSE_MIN_CHANNELS
  ):
    return _pointwise_cpu(x, kernel)
  return jnp.einsum("blc,cd->bld", x, kernel)
