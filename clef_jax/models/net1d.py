"""The paper's backbone: Net1D, a 1-D ResNeXt-style CNN with squeeze-and-excitation.

A faithful Flax port of `Net1D` from the official CLEF code (itself Shenda Hong's 2020 network and
the ECGFounder backbone), as used by CLEF: no BatchNorm, no dropout, Swish activations,
pre-activation bottleneck blocks, global mean pool, no head (spec §A).

Layout is channels-last: input `(B, L, C)`, output `(B, D)` with D = 256 / 1024 / 2048.

Parameter paths are a public API (checkpoints and the PyTorch export depend on them):

    stem_conv/{kernel,bias}
    stage{i}_block{j}/{conv1,conv2,conv3}/{kernel,bias}
    stage{i}_block{j}/{se_fc1,se_fc2}/{kernel,bias}
    dense/{kernel,bias}                       (only with `num_classes`)

Conv kernels are stored in Flax layout `(K, C_in / groups, C_out)`; Dense kernels `(in, out)`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

Array = jax.Array
Dtype = Any


@dataclasses.dataclass(frozen=True)
class Net1DVariant:
  """One size preset of `create_net1d_by_size` (spec §A.1)."""
  base_filters: int
  ratio: float
  filter_list: tuple[int, ...]
  m_blocks_list: tuple[int, ...]
  groups_width: int
  kernel_size: int = 16

  @property
  def features(self) -> int:
    return self.filter_list[-1]


VARIANTS: dict[str, Net1DVariant] = {
    "small": Net1DVariant(
        base_filters=32, ratio=0.5,
        filter_list=(32, 64, 64, 128, 128, 256),
        m_blocks_list=(1, 1, 2, 2, 2, 2), groups_width=8),
    "medium": Net1DVariant(
        base_filters=64, ratio=1.0,
        filter_list=(64, 160, 160, 400, 400, 1024, 1024),
        m_blocks_list=(2, 2, 2, 3, 3, 4, 4), groups_width=16),
    "large": Net1DVariant(
        base_filters=128, ratio=1.5,
        filter_list=(128, 256, 256, 512, 512, 1024, 1024, 2048, 2048),
        m_blocks_list=(2, 3, 3, 4, 4, 5, 5, 6, 6), groups_width=32),
}


def block_specs(variant: Net1DVariant):
  """Yields (stage, block, in_ch, out_ch, mid_ch, groups, stride, is_first) for every block."""
  in_ch = variant.base_filters
  for s, (out_ch, m_blocks) in enumerate(zip(variant.filter_list, variant.m_blocks_list)):
    for b in range(m_blocks):
      block_in = in_ch if b == 0 else out_ch
      yield dict(
          stage=s, block=b, in_ch=block_in, out_ch=out_ch,
          mid_ch=int(out_ch * variant.ratio), groups=out_ch // variant.groups_width,
          stride=2 if b == 0 else 1, is_first=(s == 0 and b == 0))
    in_ch = out_ch


# ---------------------------------------------------------------------------------------------
# Initialisation: PyTorch defaults (kaiming_uniform(a=sqrt(5)) == U(-1/sqrt(fan_in), 1/sqrt(fan_in))).
# ---------------------------------------------------------------------------------------------

torch_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_bias_init(fan_in: int) -> Callable[..., Array]:
  bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


# ---------------------------------------------------------------------------------------------
# Convolution kernels (pure functions on channels-last arrays).
#
# Numerically equivalent implementations of the SAME-padded grouped convolution:
#   "xla":       one `lax.conv_general_dilated` with `feature_group_count`. Fast on GPU/TPU; on
#                XLA:CPU every group is a strided Eigen sub-problem and the weight gradient is
#                rewritten into a much larger dense convolution (3-10x slower than "polyphase").
#   "polyphase": the grouped conv as ONE batched GEMM per layer (`_conv_polyphase`), built for
#                XLA:CPU, where large GEMMs are fast (YNNPACK) and grouped convolutions are not.
#   "hybrid":    XLA's forward; stride-1 gradients from XLA's dx and `_conv_weight_grad`, stride-2
#                ones from polyphase (`_conv_hybrid`).
#   "cpu":       per layer, "hybrid" for >= 16 channels per group, else "polyphase".
# "auto" (the default everywhere) resolves to "xla" on accelerators and "cpu" on CPU, at trace
# time. docs/benchmarks.md has the measurements behind this choice.
# ---------------------------------------------------------------------------------------------


def same_pads(length: int, kernel_size: int, stride: int) -> tuple[int, int]:
  """`MyConv1dPadSame` padding == TF/JAX SAME: floor(p/2) on the left (spec §A.2)."""
  out_len = (length + stride - 1) // stride
  p = max(0, (out_len - 1) * stride + kernel_size - length)
  return p // 2, p - p // 2


def resolve_conv_impl(impl: str) -> str:
  """Maps "auto" to "xla" on GPU/TPU and "cpu" on CPU; validates explicit names."""
  if impl == "auto":
    return "cpu" if jax.default_backend() == "cpu" else "xla"
  if impl not in GROUPED_CONV_IMPLS:
    raise ValueError(
        f"Unknown conv_impl {impl!r}; choose 'auto' or one of {sorted(GROUPED_CONV_IMPLS)}.")
  return impl


def conv1d_same(x: Array, kernel: Array, *, stride: int, groups: int, impl: str = "auto") -> Array:
  """Grouped 1-D convolution with SAME zero padding.

  Args:
    x: `(B, L, C_in)`.
    kernel: `(K, C_in // groups, C_out)`; output channels are assigned to groups in contiguous
      blocks, like PyTorch.
    stride: the stride (Net1D uses 1 and 2; any positive stride works).
    groups: number of groups.
    impl: "auto", or a key of `GROUPED_CONV_IMPLS` ("xla", "polyphase", "hybrid", "cpu").

  Returns:
    `(B, ceil(L / stride), C_out)`.
  """
  return GROUPED_CONV_IMPLS[resolve_conv_impl(impl)](x, kernel, stride=stride, groups=groups)


def _conv_xla(x: Array, kernel: Array, *, stride: int, groups: int) -> Array:
  pads = same_pads(x.shape[1], kernel.shape[0], stride)
  return lax.conv_general_dilated(
      x, kernel, window_strides=(stride,), padding=(pads,),
      dimension_numbers=("NWC", "WIO", "NWC"), feature_group_count=groups)


@functools.lru_cache(maxsize=None)
def _polyphase_plan(length: int, kernel_size: int, stride: int, phases: int
                    ) -> tuple[int, int, int, int, int]:
  """Static geometry of `_conv_polyphase`: (out_len, pad_left, rows, taps, padded_len)."""
  out_len = (length + stride - 1) // stride
  pad_left, _ = same_pads(length, kernel_size, stride)
  block = stride * phases                              # input samples per row
  rows = -(-out_len // phases)                         # output rows of `phases` samples each
  # Output t = phases*u + p reads padded inputs stride*t + k = block*(u + j) + r, r < block:
  # j = (stride*p + k) // block < taps.
  taps = (stride * (phases - 1) + kernel_size - 1) // block + 1
  return out_len, pad_left, rows, taps, block * (rows + taps - 1)


@functools.lru_cache(maxsize=None)
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


def _polyphase_kernel(kernel: Array, *, stride: int, groups: int, phases: int, taps: int
                      ) -> Array:
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
  w2 = jnp.einsum("jrpk,kcgd->grcjpd", sel, kernel.reshape(k, cig, groups, cog),
                  precision=lax.Precision.HIGHEST)
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
  xp = lax.pad(x, jnp.zeros((), x.dtype),
               ((0, 0, 0), (pad_left, padded - length - pad_left, 0), (0, 0, 0)))
  x2 = xp.reshape(b, rows + taps - 1, block, groups, cig).transpose(3, 0, 1, 2, 4)
  x2 = x2.reshape(groups, b * (rows + taps - 1), block * cig)
  w2 = _polyphase_kernel(kernel, stride=stride, groups=groups, phases=phases, taps=taps)
  z = lax.dot_general(x2, w2, (((2,), (1,)), ((0,), (0,))))      # (G, B*(rows+taps-1), taps*P*cog)
  z = z.reshape(groups, b, rows + taps - 1, taps, phases * cog)
  y = z[:, :, 0:rows, 0]
  for j in range(1, taps):
    y = y + z[:, :, j:j + rows, j]                                # (G, B, rows, P*cog)
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
      lhs, g.astype(x.dtype), window_strides=(1,), padding=((pad_left, pad_right),),
      rhs_dilation=(stride,), dimension_numbers=("WCN", "IWO", "NWC"),
      feature_group_count=groups)                                   # (Cin/G, K, Cout)
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


GROUPED_CONV_IMPLS: dict[str, Callable[..., Array]] = {
    "xla": _conv_xla,
    "polyphase": _conv_polyphase,
    "hybrid": _conv_hybrid,
    "cpu": _conv_cpu,
}


def max_pool2_same(x: Array) -> Array:
  """`MyMaxPool1dPadSame(2)`: pad one ZERO on the right, then max over non-overlapping pairs.

  For odd L the last output is max(x[L-1], 0): the pad is 0, not -inf (spec §A.2). Written as an
  elementwise maximum of the even and odd samples (not a reduce): same values and the same
  tie-splitting gradient, but XLA:CPU fuses it, where a max-reduce's gradient costs three passes.
  """
  b, length, c = x.shape
  if length % 2:
    x = jnp.pad(x, ((0, 0), (0, 1), (0, 0)))
  x = x.reshape(b, -1, 2, c)
  return jnp.maximum(x[:, :, 0], x[:, :, 1])


def _acc_dtype(dtype: Dtype) -> Dtype:
  """Reductions run in float32, or float64 when the compute dtype is float64 (x64 tests)."""
  return jnp.promote_types(dtype, jnp.float32)


def _sigmoid(x: Array) -> Array:
  """1 / (1 + exp(-x)): the same function as `jax.nn.sigmoid` to rounding, and 2.3x faster on
  XLA:CPU, whose `logistic` lowering is much slower than one exp and one divide (measured on a
  (32, 1250, 160) float32 array: 16.1 ms vs 7.0 ms, max |diff| 5e-7). Saturates to 0 and 1."""
  return 1 / (1 + jnp.exp(-x))


@jax.custom_jvp
def swish(x: Array) -> Array:
  """x * sigmoid(x) (= SiLU).

  The custom JVP keeps ONE residual per activation, the derivative s * (1 + x * (1 - s)), where
  autodiff of the product keeps both x and s: one pass less over the largest activations.
  """
  return x * _sigmoid(x)


@swish.defjvp
def _swish_jvp(primals, tangents):
  (x,), (t,) = primals, tangents
  s = _sigmoid(x)
  return x * s, t * (s * (1 + x * (1 - s)))


# Pointwise (1x1) convolutions with at least this many input or output channels take the
# weight gradient through `_pointwise_cpu` under every CPU implementation (all but "xla").
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
    xt = lax.optimization_barrier(x2.T)                            # (Cin, B*L)
    dw = xt @ g2                                                   # (Cin, Cout)
  else:
    gt = lax.optimization_barrier(g2.T)                            # (Cout, B*L)
    dw = (gt @ x2).T
  return dx, dw.astype(kernel.dtype)


_pointwise_cpu.defvjp(_pointwise_cpu_fwd, _pointwise_cpu_bwd)


def pointwise_conv(x: Array, kernel: Array, *, impl: str = "auto") -> Array:
  """1x1 convolution (no bias): (B, L, Cin) x (Cin, Cout) -> (B, L, Cout)."""
  cin, cout = kernel.shape
  if (resolve_conv_impl(impl) != "xla"
      and max(cin, cout) >= _WGRAD_TRANSPOSE_MIN_CHANNELS):
    return _pointwise_cpu(x, kernel)
  return jnp.einsum("blc,cd->bld", x, kernel)


# ---------------------------------------------------------------------------------------------
# Modules.
# ---------------------------------------------------------------------------------------------


class Conv1D(nn.Module):
  """Conv1d with bias and SAME zero padding, PyTorch-default initialisation."""
  features: int
  kernel_size: int
  stride: int = 1
  groups: int = 1
  dtype: Dtype = jnp.float32
  impl: str = "auto"

  @nn.compact
  def __call__(self, x: Array) -> Array:
    in_ch = x.shape[-1]
    fan_in = (in_ch // self.groups) * self.kernel_size
    kernel = self.param("kernel", torch_kernel_init,
                        (self.kernel_size, in_ch // self.groups, self.features), jnp.float32)
    bias = self.param("bias", torch_bias_init(fan_in), (self.features,), jnp.float32)
    kernel, bias = kernel.astype(self.dtype), bias.astype(self.dtype)
    if self.kernel_size == 1 and self.stride == 1 and self.groups == 1:
      y = pointwise_conv(x, kernel[0], impl=self.impl)   # 1x1 conv == per-step matmul.
    else:
      y = conv1d_same(x, kernel, stride=self.stride, groups=self.groups, impl=self.impl)
    return y + bias


class Dense(nn.Module):
  """nn.Linear with PyTorch-default initialisation."""
  features: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    in_ch = x.shape[-1]
    kernel = self.param("kernel", torch_kernel_init, (in_ch, self.features), jnp.float32)
    bias = self.param("bias", torch_bias_init(in_ch), (self.features,), jnp.float32)
    return x @ kernel.astype(self.dtype) + bias.astype(self.dtype)


class BasicBlock(nn.Module):
  """Pre-activation bottleneck: 1x1 -> grouped k16 (stride) -> 1x1 -> SE(r=2), plus shortcut."""
  in_ch: int
  out_ch: int
  mid_ch: int
  groups: int
  stride: int
  is_first: bool
  kernel_size: int = 16
  dtype: Dtype = jnp.float32
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, x: Array) -> Array:
    h = x if self.is_first else swish(x)
    h = Conv1D(self.mid_ch, 1, dtype=self.dtype, impl=self.conv_impl, name="conv1")(h)
    h = Conv1D(self.mid_ch, self.kernel_size, stride=self.stride, groups=self.groups,
               dtype=self.dtype, impl=self.conv_impl, name="conv2")(swish(h))
    h = Conv1D(self.out_ch, 1, dtype=self.dtype, impl=self.conv_impl, name="conv3")(swish(h))

    # Squeeze-and-excitation, r = 2. The time mean is accumulated in (at least) float32.
    e = jnp.mean(h.astype(_acc_dtype(self.dtype)), axis=1).astype(self.dtype)   # (B, out)
    e = Dense(self.out_ch // 2, dtype=self.dtype, name="se_fc1")(e)
    e = Dense(self.out_ch, dtype=self.dtype, name="se_fc2")(swish(e))
    h = h * jax.nn.sigmoid(e)[:, None, :]

    # Shortcut: zero-padded max-pool when downsampling, channel-centred zero padding.
    shortcut = x
    if self.stride != 1:
      shortcut = max_pool2_same(shortcut)
    if self.out_ch != self.in_ch:
      ch1 = (self.out_ch - self.in_ch) // 2
      ch2 = self.out_ch - self.in_ch - ch1
      shortcut = jnp.pad(shortcut, ((0, 0), (0, 0), (ch1, ch2)))
    return h + shortcut


class Net1D(nn.Module):
  """Net1D backbone (spec §A).

  Attributes:
    size: "small" | "medium" | "large", or a custom `Net1DVariant` (any stage widths and depths,
      as the official `Net1D` constructor allows; e.g. a two-stage net for fast tests).
    in_channels: 1 (single lead) or 12; only used for validation of the input.
    num_classes: optional linear head (`dense`), e.g. ECGFounder's 150-way head. None -> the
      pooled embedding is returned (CLEF).
    dtype: compute dtype; parameters stay float32.
    remat: rematerialise each block in the backward pass (gradient checkpointing).
    conv_impl: implementation of the grouped convolutions (numerically equivalent choices).
  """
  size: str | Net1DVariant = "small"
  in_channels: int = 1
  num_classes: int | None = None
  dtype: Dtype = jnp.float32
  remat: bool = False
  conv_impl: str = "auto"

  @property
  def variant(self) -> Net1DVariant:
    return _as_variant(self.size)

  @property
  def features(self) -> int:
    return self.num_classes or self.variant.features

  @nn.compact
  def __call__(self, x: Array, *, train: bool = False) -> tuple[Array, dict[str, Array]]:
    del train  # No BN/dropout in CLEF's Net1D; kept for a uniform backbone signature.
    if x.ndim != 3 or x.shape[-1] != self.in_channels:
      raise ValueError(
          f"Net1D({self.size}) expects channels-last input (B, L, {self.in_channels}); "
          f"got shape {x.shape}.")
    if x.shape[1] < 1:
      raise ValueError(f"Net1D needs at least one time step; got shape {x.shape}.")
    v = self.variant
    x = x.astype(self.dtype)
    x = swish(Conv1D(v.base_filters, v.kernel_size, stride=2, dtype=self.dtype,
                     impl=self.conv_impl, name="stem_conv")(x))
    block_cls = nn.remat(BasicBlock) if self.remat else BasicBlock
    for spec in block_specs(v):
      x = block_cls(
          in_ch=spec["in_ch"], out_ch=spec["out_ch"], mid_ch=spec["mid_ch"],
          groups=spec["groups"], stride=spec["stride"], is_first=spec["is_first"],
          kernel_size=v.kernel_size, dtype=self.dtype, conv_impl=self.conv_impl,
          name=f"stage{spec['stage']}_block{spec['block']}")(x)
    # Global mean pool over time, in float32. No norm/activation before pooling (spec §A.2).
    emb = jnp.mean(x.astype(_acc_dtype(self.dtype)), axis=1)   # (B, D)
    aux = {"embedding": emb}
    if self.num_classes:
      emb = Dense(self.num_classes, dtype=emb.dtype, name="dense")(emb)
    return emb, aux


def num_params(params: Any) -> int:
  return int(sum(np.prod(p.shape) for p in jax.tree_util.tree_leaves(params)))


def _as_variant(size: str | Net1DVariant) -> Net1DVariant:
  """A size name or a custom `Net1DVariant` -> the variant; ValueError for an unknown name."""
  if isinstance(size, Net1DVariant):
    return size
  if size not in VARIANTS:
    raise ValueError(f"Unknown Net1D size {size!r}; choose one of {sorted(VARIANTS)} "
                     "or pass a Net1DVariant.")
  return VARIANTS[size]


def paper_param_count(size: str | Net1DVariant, in_channels: int = 1) -> int:
  """Parameter count as the paper/README reports it: including the never-used BN affine params."""
  v = _as_variant(size)
  bn = v.base_filters + sum(s["in_ch"] + 2 * s["mid_ch"] for s in block_specs(v))
  return used_param_count(size, in_channels) + 2 * bn


def used_param_count(size: str | Net1DVariant, in_channels: int = 1) -> int:
  """Trainable parameters of the module (closed form, no allocation)."""
  v = _as_variant(size)
  k = v.kernel_size
  n = v.base_filters * in_channels * k + v.base_filters
  for s in block_specs(v):
    i, o, m, g = s["in_ch"], s["out_ch"], s["mid_ch"], s["groups"]
    n += i * m + m                      # conv1
    n += m * (m // g) * k + m           # conv2 (grouped)
    n += m * o + o                      # conv3
    n += o * (o // 2) + o // 2          # se_fc1
    n += (o // 2) * o + o               # se_fc2
  return n
