"""The paper's backbone: Net1D, a 1-D ResNeXt-style CNN with squeeze-and-excitation.

A faithful Flax port of `Net1D` from the official CLEF code (itself Shenda Hong's 2020 network and
the ECGFounder backbone), as used by CLEF: no BatchNorm, no dropout, Swish activations,
pre-activation bottleneck blocks, global mean pool, no head (docs/method.md §A).

Layout is channels-last: input `(B, L, C)`, output `(B, D)` with D = 256 / 1024 / 2048.

Parameter paths are a public API (checkpoints and the PyTorch export depend on them):

    stem_conv/{kernel,bias}
    stage{i}_block{j}/{conv1,conv2,conv3}/{kernel,bias}
    stage{i}_block{j}/{se_fc1,se_fc2}/{kernel,bias}
    dense/{kernel,bias}                       (only with `num_classes`)

Conv kernels are stored in Flax layout `(K, C_in / groups, C_out)`; Dense kernels `(in, out)`.

The size presets and the block layout are `clef_jax.arch.net1d`; the convolution formulations
behind `conv_impl` are `conv_cpu`; the PyTorch-initialised layers are `layers`.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from clef_jax.arch.net1d import (  # noqa: F401
  VARIANTS,
  Net1DVariant,
  as_variant,
  block_specs,
  paper_param_count,
  used_param_count,
)
from clef_jax.models.conv_cpu import conv1d_same, pointwise_conv
from clef_jax.models.layers import Dense, torch_bias_init, torch_kernel_init

Array = jax.Array
Dtype = Any


# ---------------------------------------------------------------------------------------------
# Elementwise pieces.
# ---------------------------------------------------------------------------------------------


def max_pool2_same(x: Array) -> Array:
  """`MyMaxPool1dPadSame(2)`: pad one ZERO on the right, then max over non-overlapping pairs.

  For odd L the last output is max(x[L-1], 0): the pad is 0, not -inf (docs/method.md §A.2). Written as an
  elementwise maximum of the even and odd samples (not a reduce): same values and the same
  tie-splitting gradient, but XLA:CPU fuses it, where a max-reduce's gradient costs three passes.
  The samples are strided slices of the time axis, not a `(B, L/2, 2, C)` reshape: a TPU tiles
  that size-2 axis and relays the array out in both passes.
  """
  if x.shape[1] % 2:
    x = jnp.pad(x, ((0, 0), (0, 1), (0, 0)))
  return jnp.maximum(x[:, 0::2], x[:, 1::2])


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
    kernel = self.param(
      "kernel",
      torch_kernel_init,
      (self.kernel_size, in_ch // self.groups, self.features),
      jnp.float32,
    )
    bias = self.param("bias", torch_bias_init(fan_in), (self.features,), jnp.float32)
    kernel, bias = kernel.astype(self.dtype), bias.astype(self.dtype)
    if self.kernel_size == 1 and self.stride == 1 and self.groups == 1:
      y = pointwise_conv(x, kernel[0], impl=self.impl)  # 1x1 conv == per-step matmul.
    else:
      y = conv1d_same(x, kernel, stride=self.stride, groups=self.groups, impl=self.impl)
    return y + bias


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
    h = Conv1D(
      self.mid_ch,
      self.kernel_size,
      stride=self.stride,
      groups=self.groups,
      dtype=self.dtype,
      impl=self.conv_impl,
      name="conv2",
    )(swish(h))
    h = Conv1D(self.out_ch, 1, dtype=self.dtype, impl=self.conv_impl, name="conv3")(swish(h))

    # Squeeze-and-excitation, r = 2. The time mean is accumulated in (at least) float32.
    e = jnp.mean(h.astype(_acc_dtype(self.dtype)), axis=1).astype(self.dtype)  # (B, out)
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
  """Net1D backbone (docs/method.md §A).

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
    return as_variant(self.size)

  @property
  def features(self) -> int:
    return self.num_classes or self.variant.features

  @nn.compact
  def __call__(self, x: Array, *, train: bool = False) -> tuple[Array, dict[str, Array]]:
    del train  # No BN/dropout in CLEF's Net1D; kept for a uniform backbone signature.
    if x.ndim != 3 or x.shape[-1] != self.in_channels:
      raise ValueError(
        f"Net1D({self.size}) expects channels-last input (B, L, {self.in_channels}); "
        f"got shape {x.shape}."
      )
    if x.shape[1] < 1:
      raise ValueError(f"Net1D needs at least one time step; got shape {x.shape}.")
    v = self.variant
    x = x.astype(self.dtype)
    x = swish(
      Conv1D(
        v.base_filters,
        v.kernel_size,
        stride=2,
        dtype=self.dtype,
        impl=self.conv_impl,
        name="stem_conv",
      )(x)
    )
    block_cls = nn.remat(BasicBlock) if self.remat else BasicBlock
    for spec in block_specs(v):
      x = block_cls(
        in_ch=spec["in_ch"],
        out_ch=spec["out_ch"],
        mid_ch=spec["mid_ch"],
        groups=spec["groups"],
        stride=spec["stride"],
        is_first=spec["is_first"],
        kernel_size=v.kernel_size,
        dtype=self.dtype,
        conv_impl=self.conv_impl,
        name=f"stage{spec['stage']}_block{spec['block']}",
      )(x)
    # Global mean pool over time, in float32. No norm/activation before pooling (docs/method.md §A.2).
    emb = jnp.mean(x.astype(_acc_dtype(self.dtype)), axis=1)  # (B, D)
    aux = {"embedding": emb}
    if self.num_classes:
      emb = Dense(self.num_classes, dtype=emb.dtype, name="dense")(emb)
    return emb, aux
