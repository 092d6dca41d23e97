"""MSFormer: a multi-scale (hierarchical) Transformer ECG backbone at Net1D's parameter budgets.

Not part of the CLEF paper (docs/method.md §B: CLEF's only backbone is Net1D); this is the project's
alternative backbone, sized so that each preset is within ±10 % of Net1D's trainable parameters
(docs/method.md §A.4) and returns the same embedding widths (256 / 1024 / 2048). See docs/msformer.md.

Pipeline for an input `(B, L, C)` (channels-last, any L >= 1):

  1. Patch embedding: zero-pad L to a multiple of `patch_size` P (10 samples = 20 ms at 500 Hz),
     cut non-overlapping patches and project them with one Dense layer -- a Conv1d with
     kernel = stride = P, written as reshape + Dense. N0 = ceil(L / P) tokens.
  2. S stages. Stage s > 0 first merges adjacent token pairs (Swin-style: concatenate -> LayerNorm
     -> Dense; one zero token is appended when the count is odd), so N_s = ceil(N_{s-1} / 2) and a
     stage-s token covers 2^s patches: 20 ms, 40 ms, 80 ms, 160 ms for the 4-stage presets.
  3. Pre-LN Transformer blocks: x += Attn(LN(x)); x += MLP(LN(x)), MLP ratio 4 with exact (erf)
     GELU. Attention has separate q/k/v/out Dense layers, rotary position embedding (RoPE) on q/k
     and runs through `jax.nn.dot_product_attention`. A stage attends globally when it has
     <= `max_global_tokens` tokens, otherwise within non-overlapping windows of `window_size`
     tokens (the last window is zero-padded and its pad keys are masked out).
  4. Fusion: every stage's output goes through its own final LayerNorm and is mean-pooled over
     tokens (float32); the S pooled vectors are concatenated and projected by `fusion` to D.

Every token is valid at every stage (each holds at least one real sample), so mean-pooling needs no
mask; padding exists only (a) as zero samples inside the last patch (a conv's SAME-style zero
padding), (b) as the zero token a merge appends for odd counts, and (c) inside the last attention
window, where it is masked.

RoPE positions are in *time*, measured in stage-0 tokens: token i of stage s is centred at
(i + 0.5) * 2^s - 0.5, the mean of its two children's centres. Scales therefore agree across stages
and input lengths, and a relative offset means the same duration everywhere.

Parameter paths are a public API (checkpoints and the PyTorch export depend on them):

    patch_embed/{kernel,bias}
    stage{s}_merge/{norm/{scale,bias}, proj/{kernel,bias}}                       (s >= 1)
    stage{s}_block{b}/norm1/{scale,bias}
    stage{s}_block{b}/attn/{query,key,value,out}/{kernel,bias}
    stage{s}_block{b}/norm2/{scale,bias}
    stage{s}_block{b}/mlp/{fc1,fc2}/{kernel,bias}
    stage{s}_norm/{scale,bias}
    fusion/{kernel,bias}
    dense/{kernel,bias}                                       (only with `num_classes`)

Dense kernels are `(in, out)`. The patch_embed kernel's input index is p * C + c (sample p of the
patch, channel c).
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from clef_jax.arch.msformer import (  # noqa: F401
  LN_EPSILON,
  ROPE_BASE,
  VARIANTS,
  MSFormerVariant,
  param_count,
  rope_tables,
  stage_token_counts,
  token_positions,
)
from clef_jax.models import layers

Array = jax.Array
Dtype = Any


def _acc_dtype(dtype: Dtype) -> Dtype:
  """Statistics and means run in float32, or float64 when the compute dtype is (x64 tests)."""
  return jnp.promote_types(dtype, jnp.float32)


# ---------------------------------------------------------------------------------------------
# Pure functions: patching, merging, RoPE, attention.
# ---------------------------------------------------------------------------------------------


def patchify(x: Array, patch_size: int) -> Array:
  """(B, L, C) -> (B, ceil(L/P), P*C): zero-pads the end, flattens each patch time-major."""
  b, length, c = x.shape
  n = -(-length // patch_size)
  x = jnp.pad(x, ((0, 0), (0, n * patch_size - length), (0, 0)))
  return x.reshape(b, n, patch_size * c)


def pair_tokens(x: Array) -> Array:
  """(B, N, W) -> (B, ceil(N/2), 2W): concatenates tokens 2i and 2i+1 (a zero token pads odd N)."""
  b, n, w = x.shape
  if n % 2:
    x = jnp.pad(x, ((0, 0), (0, 1), (0, 0)))
  return x.reshape(b, -1, 2 * w)


def apply_rope(x: Array, cos: Array, sin: Array) -> Array:
  """Rotates (x[..., :h], x[..., h:]) pairs ("rotate-half" / GPT-NeoX layout), h = Dh / 2.

  Args:
    x: `(B, N, H, Dh)`.
    cos, sin: `(N, Dh / 2)`.

  Returns:
    `(B, N, H, Dh)` in x's dtype; the rotation itself runs in float32.
  """
  h = x.shape[-1] // 2
  xf = x.astype(_acc_dtype(x.dtype))
  x1, x2 = xf[..., :h], xf[..., h:]
  c, s = cos[None, :, None, :], sin[None, :, None, :]
  return jnp.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1).astype(x.dtype)


def multi_head_attention(
  q: Array,
  k: Array,
  v: Array,
  *,
  max_global_tokens: int,
  window_size: int,
  implementation: str | None = None,
) -> Array:
  """Global or non-overlapping windowed scaled dot-product attention.

  Softmax precision: `jax.nn.dot_product_attention`'s XLA path (the default; jax 0.10) computes
  the logits with `preferred_element_type=float32` (BF16_BF16_F32 dot for bf16 inputs), masks
  them, and runs the softmax in float32 before casting the probabilities back to the value dtype
  for the PV product -- so bf16 compute needs no manual upcast here. cuDNN's fused kernel
  (`implementation="cudnn"`, bf16/fp16 on GPU only) also accumulates the softmax in float32.

  Args:
    q, k, v: `(B, N, H, Dh)`, RoPE already applied to q and k.
    max_global_tokens: attend globally when N <= this.
    window_size: window length W for the windowed path. The last window is zero-padded to W and
      its pad keys get zero weight via `key_value_seq_lengths`; pad queries are dropped.
    implementation: passed to `jax.nn.dot_product_attention` (None -> its default, XLA).

  Returns:
    `(B, N, H, Dh)`.
  """
  b, n, h, d = q.shape
  if n <= max_global_tokens:
    return jax.nn.dot_product_attention(q, k, v, implementation=implementation)
  num_windows = -(-n // window_size)
  pad = num_windows * window_size - n

  def to_windows(t):  # (B, N, H, Dh) -> (B * nW, W, H, Dh), batch-major.
    t = jnp.pad(t, ((0, 0), (0, pad), (0, 0), (0, 0)))
    return t.reshape(b * num_windows, window_size, h, d)

  # Valid keys per window: W everywhere but the last, which holds n - (nW - 1) * W real tokens.
  lengths = np.full((num_windows,), window_size, np.int32)
  lengths[-1] = n - (num_windows - 1) * window_size
  out = jax.nn.dot_product_attention(
    to_windows(q),
    to_windows(k),
    to_windows(v),
    key_value_seq_lengths=jnp.asarray(np.tile(lengths, b)),
    implementation=implementation,
  )
  return out.reshape(b, num_windows * window_size, h, d)[:, :n]


# ---------------------------------------------------------------------------------------------
# Modules.
# ---------------------------------------------------------------------------------------------

# Transformer-standard init (ViT/BERT): truncated normal, std 0.02; zero biases. The patch
# embedding instead uses LeCun normal (big_vision's conv default): its fan-in is only P*C = 10, and
# std 0.02 would start the residual stream ~20x below unit scale.
default_kernel_init = nn.initializers.truncated_normal(0.02)


# MSFormer's Dense layers: `layers.Dense` with that init and zero biases.
Dense = functools.partial(
  layers.Dense, kernel_init=default_kernel_init, bias_init=nn.initializers.zeros
)


class LayerNorm(nn.Module):
  """LayerNorm over the last axis, eps 1e-6; two-pass statistics in float32 (torch's formula)."""

  dtype: Dtype = jnp.float32
  epsilon: float = LN_EPSILON

  @nn.compact
  def __call__(self, x: Array) -> Array:
    w = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (w,), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (w,), jnp.float32)
    xf = x.astype(_acc_dtype(x.dtype))
    mean = jnp.mean(xf, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(xf - mean), axis=-1, keepdims=True)
    y = (xf - mean) * jax.lax.rsqrt(var + self.epsilon) * scale + bias
    return y.astype(self.dtype)


class Attention(nn.Module):
  """Multi-head self-attention: separate q/k/v/out Dense layers, RoPE, global or windowed."""

  num_heads: int
  max_global_tokens: int
  window_size: int
  dtype: Dtype = jnp.float32
  attention_impl: str | None = None

  @nn.compact
  def __call__(self, x: Array, cos: Array, sin: Array) -> Array:
    b, n, w = x.shape
    head_dim = w // self.num_heads

    def heads(name):  # (B, N, W) -> (B, N, H, Dh)
      return Dense(w, dtype=self.dtype, name=name)(x).reshape(b, n, self.num_heads, head_dim)

    q = apply_rope(heads("query"), cos, sin)
    k = apply_rope(heads("key"), cos, sin)
    v = heads("value")
    o = multi_head_attention(
      q,
      k,
      v,
      max_global_tokens=self.max_global_tokens,
      window_size=self.window_size,
      implementation=self.attention_impl,
    )
    return Dense(w, dtype=self.dtype, name="out")(o.reshape(b, n, w))


class Mlp(nn.Module):
  """fc1 (W -> ratio * W) -> exact erf GELU (== torch nn.GELU()) -> fc2."""

  mlp_ratio: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    w = x.shape[-1]
    h = Dense(self.mlp_ratio * w, dtype=self.dtype, name="fc1")(x)
    # approximate=False: jax's default is the tanh form; the erf form matches torch's default.
    h = jax.nn.gelu(h, approximate=False)
    return Dense(w, dtype=self.dtype, name="fc2")(h)


class Block(nn.Module):
  """Pre-LN Transformer block: x + Attn(LN(x)), then x + MLP(LN(x))."""

  num_heads: int
  mlp_ratio: int
  max_global_tokens: int
  window_size: int
  dtype: Dtype = jnp.float32
  attention_impl: str | None = None

  @nn.compact
  def __call__(self, x: Array, cos: Array, sin: Array) -> Array:
    h = LayerNorm(dtype=self.dtype, name="norm1")(x)
    x = x + Attention(
      self.num_heads,
      self.max_global_tokens,
      self.window_size,
      dtype=self.dtype,
      attention_impl=self.attention_impl,
      name="attn",
    )(h, cos, sin)
    h = LayerNorm(dtype=self.dtype, name="norm2")(x)
    return x + Mlp(self.mlp_ratio, dtype=self.dtype, name="mlp")(h)


class Merge(nn.Module):
  """Token merging x2: (B, N, W) -> pairs (B, ceil(N/2), 2W) -> LayerNorm -> Dense -> W'."""

  features: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    x = LayerNorm(dtype=self.dtype, name="norm")(pair_tokens(x))
    return Dense(self.features, dtype=self.dtype, name="proj")(x)


class MSFormer(nn.Module):
  """Multi-scale Transformer backbone (module docstring; docs/msformer.md).

  Attributes:
    size: "small" | "medium" | "large".
    in_channels: 1 (single lead) or 12; sets the patch embedding's input width.
    num_classes: optional linear head (`dense`) on the embedding; None -> the embedding.
    dtype: compute dtype; params stay float32. LayerNorm statistics, RoPE, softmax, pooled means,
      the fusion layer and the head run in float32.
    remat: rematerialise each Transformer block in the backward pass.
    max_global_tokens: a stage with more tokens than this uses windowed attention.
    window_size: tokens per attention window on the windowed path.
    rope_base: RoPE frequency base (positions are in stage-0 tokens, up to ~3000 for 60 s).
    attention_impl: `implementation` for `jax.nn.dot_product_attention`: None (its default, XLA),
      "xla", or "cudnn" (fused kernel; GPU with bf16/fp16 compute only).
  """

  size: str = "small"
  in_channels: int = 1
  num_classes: int | None = None
  dtype: Dtype = jnp.float32
  remat: bool = False
  max_global_tokens: int = 512
  window_size: int = 128
  rope_base: float = ROPE_BASE
  attention_impl: str | None = None

  @property
  def variant(self) -> MSFormerVariant:
    return VARIANTS[self.size]

  @property
  def features(self) -> int:
    return self.num_classes or self.variant.features

  @nn.compact
  def __call__(self, x: Array, *, train: bool = False) -> tuple[Array, dict[str, Array]]:
    """Maps `(B, L, in_channels)` to `((B, D), aux)`.

    aux holds "embedding" (the (B, D) fused embedding, before any head) and "stage{s}_pooled"
    (B, widths[s]): the per-stage mean-pooled, normalised features, float32.
    """
    del train  # No dropout / stochastic depth (CLEF trains Net1D without either).
    if self.size not in VARIANTS:
      raise ValueError(f"Unknown MSFormer size {self.size!r}; choose one of {sorted(VARIANTS)}.")
    if x.ndim != 3 or x.shape[-1] != self.in_channels:
      raise ValueError(
        f"MSFormer({self.size}) expects channels-last input (B, L, {self.in_channels}); "
        f"got shape {x.shape}."
      )
    if x.shape[1] < 1:
      raise ValueError(f"MSFormer needs at least one time step; got shape {x.shape}.")
    if self.max_global_tokens < 1 or self.window_size < 1:
      raise ValueError("max_global_tokens and window_size must be positive.")
    v = self.variant
    acc = _acc_dtype(self.dtype)

    x = patchify(x.astype(self.dtype), v.patch_size)  # (B, N0, P*C)
    x = Dense(
      v.widths[0], dtype=self.dtype, kernel_init=nn.initializers.lecun_normal(), name="patch_embed"
    )(x)  # (B, N0, W0)
    block_cls = nn.remat(Block) if self.remat else Block
    aux: dict[str, Array] = {}
    pooled = []
    for s, (width, depth, heads) in enumerate(zip(v.widths, v.depths, v.num_heads)):
      if s > 0:
        x = Merge(width, dtype=self.dtype, name=f"stage{s}_merge")(x)  # (B, N_s, W_s)
      cos, sin = rope_tables(x.shape[1], s, width // heads, self.rope_base)
      cos, sin = jnp.asarray(cos), jnp.asarray(sin)  # (N_s, Dh/2) float32
      for b in range(depth):
        x = block_cls(
          heads,
          v.mlp_ratio,
          self.max_global_tokens,
          self.window_size,
          dtype=self.dtype,
          attention_impl=self.attention_impl,
          name=f"stage{s}_block{b}",
        )(x, cos, sin)
      # The residual stream continues un-normalised into the next merge (which has its own LN);
      # the pooled copy goes through this stage's final LN (pre-LN blocks leave it unnormalised).
      y = LayerNorm(dtype=acc, name=f"stage{s}_norm")(x)
      pooled.append(jnp.mean(y, axis=1))  # (B, W_s) float32
      aux[f"stage{s}_pooled"] = pooled[-1]
    emb = Dense(v.features, dtype=acc, name="fusion")(jnp.concatenate(pooled, axis=-1))  # (B, D)
    aux["embedding"] = emb
    if self.num_classes:
      emb = Dense(self.num_classes, dtype=acc, name="dense")(emb)
    return emb, aux
