"""MSFormer's architecture: size presets, LayerNorm epsilon, RoPE tables, token counts.

Shared by the Flax module (`clef_jax.models.msformer`), its PyTorch twin
(`clef_jax.export.torch_msformer`) and the interop table (`clef_jax.export.msformer_interop`).
"""

from __future__ import annotations

import dataclasses

import numpy as np

LN_EPSILON = 1e-6  # Flax's default; the torch twin sets it explicitly (torch's default is 1e-5).
ROPE_BASE = 10_000.0


@dataclasses.dataclass(frozen=True)
class MSFormerVariant:
  """One size preset. All tuples have one entry per stage."""

  widths: tuple[int, ...]
  depths: tuple[int, ...]
  num_heads: tuple[int, ...]
  features: int  # Embedding width D (= Net1D's).
  patch_size: int = 10  # Samples per stage-0 token: 20 ms at 500 Hz.
  mlp_ratio: int = 4

  @property
  def num_stages(self) -> int:
    return len(self.widths)


# Widths/depths chosen for Net1D's budgets (docs/method.md §A.4; exact counts in
# docs/msformer.md): head dim 32 (small) / 64 (medium, large), widths growing with the stage,
# depth where the tokens are few (stage 2+), like Swin.
VARIANTS: dict[str, MSFormerVariant] = {
  # 429,280 params = 0.969 x Net1D-small (443,184).
  "small": MSFormerVariant(
    widths=(32, 64, 64, 96), depths=(2, 2, 2, 1), num_heads=(1, 2, 2, 3), features=256
  ),
  # 31,590,272 params = 1.033 x Net1D-medium (30,587,632).
  "medium": MSFormerVariant(
    widths=(128, 256, 512, 768), depths=(2, 2, 4, 2), num_heads=(2, 4, 8, 12), features=1024
  ),
  # 298,340,608 params = 1.007 x Net1D-large (296,301,312).
  "large": MSFormerVariant(
    widths=(256, 512, 1024, 2048), depths=(2, 2, 14, 2), num_heads=(4, 8, 16, 32), features=2048
  ),
}


def check_size(size: str) -> None:
  """ValueError unless `size` names a preset."""
  if size not in VARIANTS:
    raise ValueError(f"Unknown MSFormer size {size!r}; choose one of {sorted(VARIANTS)}.")


def variant(size: str) -> MSFormerVariant:
  """The preset `size`; ValueError for an unknown name."""
  check_size(size)
  return VARIANTS[size]


def stage_token_counts(
  length: int, size: str = "small", *, patch_size: int | None = None
) -> tuple[int, ...]:
  """Tokens per stage for an input of `length` samples: N0 = ceil(L/P), N_s = ceil(N_{s-1}/2)."""
  v = VARIANTS[size]
  n = -(-length // (patch_size or v.patch_size))
  counts = [n]
  for _ in range(v.num_stages - 1):
    n = -(-n // 2)
    counts.append(n)
  return tuple(counts)


def token_positions(num_tokens: int, stage: int) -> np.ndarray:
  """Centres of stage-`stage` tokens in stage-0 token units: (i + 0.5) * 2^s - 0.5, float64."""
  return (np.arange(num_tokens, dtype=np.float64) + 0.5) * 2.0**stage - 0.5


def rope_tables(
  num_tokens: int, stage: int, head_dim: int, base: float = ROPE_BASE
) -> tuple[np.ndarray, np.ndarray]:
  """cos/sin tables `(N, head_dim // 2)` for rotary embedding, float32.

  Frequencies are base^(-2j / head_dim), j < head_dim / 2. The token count is static under jit, so
  the tables are computed here in float64 numpy (exact angles even at position ~3000, where a
  float32 product would already be off by ~1e-4 rad) and enter the graph as constants.
  """
  if head_dim % 2:
    raise ValueError(f"RoPE needs an even head dimension; got {head_dim}.")
  inv_freq = base ** (-np.arange(head_dim // 2, dtype=np.float64) * 2.0 / head_dim)
  angles = token_positions(num_tokens, stage)[:, None] * inv_freq[None, :]  # (N, Dh/2)
  return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


def param_count(size: str, in_channels: int = 1, num_classes: int | None = None) -> int:
  """Trainable parameters (closed form, no allocation); equals `layers.num_params` of an init."""
  v = VARIANTS[size]
  r = v.mlp_ratio
  n = v.patch_size * in_channels * v.widths[0] + v.widths[0]  # patch_embed
  for s, (w, d) in enumerate(zip(v.widths, v.depths)):
    if s > 0:
      wp = v.widths[s - 1]
      n += 2 * (2 * wp) + 2 * wp * w + w  # merge norm + proj
    block = 4 * (w * w + w) + (w * r * w + r * w) + (r * w * w + w) + 2 * 2 * w
    n += d * block + 2 * w  # blocks + stage norm
  n += sum(v.widths) * v.features + v.features  # fusion
  if num_classes:
    n += v.features * num_classes + num_classes
  return n
