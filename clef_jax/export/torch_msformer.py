"""PyTorch twin of MSFormer (`clef_jax.models.msformer`); its forward equals the Flax model's.

Channels-first like `TorchNet1D` and torch convention: input `(B, C, L)`, output `(B, D)` (or
`(B, num_classes)` with a head). Imports torch, numpy and the pure-Python architecture description
(`clef_jax.arch.msformer`) only; no JAX.

Modules are registered under the Flax names, so `state_dict()` keys are the Flax paths joined with
"." (`msformer_interop.param_table`). Flax conventions matched explicitly:

  - LayerNorm eps 1e-6 (torch's default is 1e-5); biased variance, like torch.
  - GELU is exact (erf) on both sides: the Flax model calls `jax.nn.gelu(approximate=False)`.
  - Attention scale 1/sqrt(head_dim); softmax in float32; pad keys of the last window get weight 0.
  - RoPE "rotate-half" layout, positions (i + 0.5) * 2^s - 0.5 in stage-0 tokens, angles computed
    in float64 and rounded to float32 (the Flax model does the same, as graph constants).
  - Patches are flattened time-major (index p * C + c); odd token counts are merged with one zero
    token appended.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from clef_jax.arch import msformer as arch
from clef_jax.arch.msformer import LN_EPSILON, ROPE_BASE


def rope_tables(
  num_tokens: int, stage: int, head_dim: int, base: float = ROPE_BASE
) -> tuple[torch.Tensor, torch.Tensor]:
  """`arch.msformer.rope_tables` (the Flax model's tables) as torch tensors."""
  cos, sin = arch.rope_tables(num_tokens, stage, head_dim, base)
  return torch.from_numpy(cos), torch.from_numpy(sin)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
  """x `(B, H, N, Dh)`; rotates the pairs (x[..., j], x[..., j + Dh/2])."""
  h = x.shape[-1] // 2
  x1, x2 = x[..., :h], x[..., h:]
  return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def attention(
  q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, max_global_tokens: int, window_size: int
) -> torch.Tensor:
  """Softmax attention on `(B, H, N, Dh)`, global or in non-overlapping windows of W tokens."""
  b, h, n, d = q.shape
  scale = 1.0 / np.sqrt(d)
  if n <= max_global_tokens:
    probs = torch.softmax(((q @ k.transpose(-1, -2)) * scale).float(), dim=-1)
    return probs.to(v.dtype) @ v
  nw = -(-n // window_size)
  pad = nw * window_size - n

  def windows(t):  # (B, H, N, Dh) -> (B, H, nW, W, Dh)
    return F.pad(t, (0, 0, 0, pad)).reshape(b, h, nw, window_size, d)

  logits = (windows(q) @ windows(k).transpose(-1, -2)) * scale  # (B, H, nW, W, W)
  # Key j of window w is real iff w * W + j < n: only the last window has pad keys.
  key_pos = torch.arange(nw * window_size).reshape(nw, 1, window_size)
  logits = logits.masked_fill(key_pos >= n, float("-inf"))
  probs = torch.softmax(logits.float(), dim=-1).to(v.dtype)  # float32 softmax
  out = probs @ windows(v)  # (B, H, nW, W, Dh)
  return out.reshape(b, h, nw * window_size, d)[:, :, :n]


class Attention(nn.Module):
  """Separate query/key/value/out Linear layers (Flax `attn/{query,key,value,out}`)."""

  def __init__(self, width: int, num_heads: int, max_global_tokens: int, window_size: int):
    super().__init__()
    self.num_heads, self.max_global_tokens, self.window_size = (
      num_heads,
      max_global_tokens,
      window_size,
    )
    self.query = nn.Linear(width, width)
    self.key = nn.Linear(width, width)
    self.value = nn.Linear(width, width)
    self.out = nn.Linear(width, width)

  def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    b, n, w = x.shape

    def heads(layer):  # (B, N, W) -> (B, H, N, Dh)
      return layer(x).reshape(b, n, self.num_heads, w // self.num_heads).transpose(1, 2)

    q = apply_rope(heads(self.query), cos, sin)
    k = apply_rope(heads(self.key), cos, sin)
    o = attention(
      q,
      k,
      heads(self.value),
      max_global_tokens=self.max_global_tokens,
      window_size=self.window_size,
    )
    return self.out(o.transpose(1, 2).reshape(b, n, w))


class Mlp(nn.Module):
  def __init__(self, width: int, ratio: int):
    super().__init__()
    self.fc1 = nn.Linear(width, ratio * width)
    self.fc2 = nn.Linear(ratio * width, width)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return self.fc2(F.gelu(self.fc1(x)))  # Exact erf GELU, as in the Flax model.


class Block(nn.Module):
  """Pre-LN: x + attn(norm1(x)); x + mlp(norm2(x))."""

  def __init__(
    self, width: int, num_heads: int, ratio: int, max_global_tokens: int, window_size: int
  ):
    super().__init__()
    self.norm1 = nn.LayerNorm(width, eps=LN_EPSILON)
    self.attn = Attention(width, num_heads, max_global_tokens, window_size)
    self.norm2 = nn.LayerNorm(width, eps=LN_EPSILON)
    self.mlp = Mlp(width, ratio)

  def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x = x + self.attn(self.norm1(x), cos, sin)
    return x + self.mlp(self.norm2(x))


class Merge(nn.Module):
  """Pairs adjacent tokens (zero token appended for odd N) -> LayerNorm(2W) -> Linear(2W, W')."""

  def __init__(self, in_width: int, out_width: int):
    super().__init__()
    self.norm = nn.LayerNorm(2 * in_width, eps=LN_EPSILON)
    self.proj = nn.Linear(2 * in_width, out_width)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    b, n, w = x.shape
    x = F.pad(x, (0, 0, 0, n % 2)).reshape(b, -1, 2 * w)
    return self.proj(self.norm(x))


class TorchMSFormer(nn.Module):
  """MSFormer in PyTorch with `state_dict()` keys equal to the Flax paths (joined with ".").

  Args:
    size: "small" | "medium" | "large".
    in_channels: input leads.
    num_classes: None -> the fused embedding is returned; an int -> a `dense` Linear head.
    max_global_tokens: stages with more tokens use windowed attention (Flax default 512).
    window_size: window length in tokens (Flax default 128).
    rope_base: RoPE frequency base (Flax default 10000).
  """

  def __init__(
    self,
    size: str,
    in_channels: int = 1,
    num_classes: int | None = None,
    *,
    max_global_tokens: int = 512,
    window_size: int = 128,
    rope_base: float = ROPE_BASE,
  ):
    super().__init__()
    v = arch.variant(size)
    widths, depths, heads, patch, ratio = v.widths, v.depths, v.num_heads, v.patch_size, v.mlp_ratio
    self.size, self.in_channels, self.patch_size = size, in_channels, patch
    self.widths, self.depths, self.heads, self.rope_base = widths, depths, heads, rope_base
    # Registration order == msformer_interop.param_table order == state_dict order.
    self.patch_embed = nn.Linear(patch * in_channels, widths[0])
    for s, (w, d, h) in enumerate(zip(widths, depths, heads)):
      if s > 0:
        self.add_module(f"stage{s}_merge", Merge(widths[s - 1], w))
      for b in range(d):
        self.add_module(f"stage{s}_block{b}", Block(w, h, ratio, max_global_tokens, window_size))
      self.add_module(f"stage{s}_norm", nn.LayerNorm(w, eps=LN_EPSILON))
    self.fusion = nn.Linear(sum(widths), v.features)
    self.dense = nn.Linear(v.features, num_classes) if num_classes else None

  def forward(self, x: torch.Tensor, *, return_aux: bool = False):
    """`(B, in_channels, L)` -> `(B, D)`; with `return_aux`, also the Flax model's aux dict."""
    if x.ndim != 3 or x.shape[1] != self.in_channels:
      raise ValueError(
        f"TorchMSFormer({self.size}) expects (B, {self.in_channels}, L); got {tuple(x.shape)}."
      )
    b, c, length = x.shape
    n = -(-length // self.patch_size)
    x = F.pad(x, (0, n * self.patch_size - length))  # (B, C, N * P)
    x = x.transpose(1, 2).reshape(b, n, self.patch_size * c)  # time-major patches
    x = self.patch_embed(x)  # (B, N0, W0)
    aux, pooled = {}, []
    for s, (w, d, h) in enumerate(zip(self.widths, self.depths, self.heads)):
      if s > 0:
        x = getattr(self, f"stage{s}_merge")(x)
      cos, sin = rope_tables(x.shape[1], s, w // h, self.rope_base)
      cos, sin = cos.to(x.device, x.dtype), sin.to(x.device, x.dtype)
      for blk in range(d):
        x = getattr(self, f"stage{s}_block{blk}")(x, cos, sin)
      pooled.append(getattr(self, f"stage{s}_norm")(x).mean(dim=1))  # (B, W_s)
      aux[f"stage{s}_pooled"] = pooled[-1]
    emb = self.fusion(torch.cat(pooled, dim=-1))
    aux["embedding"] = emb
    if self.dense is not None:
      emb = self.dense(emb)
    return (emb, aux) if return_aux else emb
