"""Net1D's architecture: the size presets and the block layout they expand to.

The official `create_net1d_by_size` presets (docs/method.md §A.1). `block_specs` is the one
walk over stages and blocks that the Flax module, the PyTorch twin, the state-dict table and the
parameter counts share.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator


@dataclasses.dataclass(frozen=True)
class Net1DVariant:
  """One size preset of `create_net1d_by_size`."""

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
    base_filters=32,
    ratio=0.5,
    filter_list=(32, 64, 64, 128, 128, 256),
    m_blocks_list=(1, 1, 2, 2, 2, 2),
    groups_width=8,
  ),
  "medium": Net1DVariant(
    base_filters=64,
    ratio=1.0,
    filter_list=(64, 160, 160, 400, 400, 1024, 1024),
    m_blocks_list=(2, 2, 2, 3, 3, 4, 4),
    groups_width=16,
  ),
  "large": Net1DVariant(
    base_filters=128,
    ratio=1.5,
    filter_list=(128, 256, 256, 512, 512, 1024, 1024, 2048, 2048),
    m_blocks_list=(2, 3, 3, 4, 4, 5, 5, 6, 6),
    groups_width=32,
  ),
}


def check_size(size: str) -> None:
  """ValueError unless `size` names a preset."""
  if size not in VARIANTS:
    raise ValueError(f"Unknown Net1D size {size!r}; choose one of {sorted(VARIANTS)}.")


def as_variant(size: str | Net1DVariant) -> Net1DVariant:
  """A size name or a custom `Net1DVariant` -> the variant; ValueError for an unknown name."""
  if isinstance(size, Net1DVariant):
    return size
  if size not in VARIANTS:
    raise ValueError(
      f"Unknown Net1D size {size!r}; choose one of {sorted(VARIANTS)} or pass a Net1DVariant."
    )
  return VARIANTS[size]


def block_specs(size: str | Net1DVariant) -> Iterator[dict[str, int | bool]]:
  """Yields one dict per block, in forward order (the official `BasicStage` loop,
  docs/method.md §A.2).

  Keys: stage, block, in_ch, out_ch, mid_ch, groups, stride, is_first.

  Args:
    size: "small" | "medium" | "large", or a custom `Net1DVariant`.
  """
  v = as_variant(size)
  in_ch = v.base_filters
  for s, (out_ch, m_blocks) in enumerate(zip(v.filter_list, v.m_blocks_list)):
    for b in range(m_blocks):
      yield dict(
        stage=s,
        block=b,
        in_ch=in_ch if b == 0 else out_ch,
        out_ch=out_ch,
        mid_ch=int(out_ch * v.ratio),
        groups=out_ch // v.groups_width,
        stride=2 if b == 0 else 1,
        is_first=(s == 0 and b == 0),
      )
    in_ch = out_ch


def used_param_count(size: str | Net1DVariant, in_channels: int = 1) -> int:
  """Trainable parameters of the module (closed form, no allocation)."""
  v = as_variant(size)
  k = v.kernel_size
  n = v.base_filters * in_channels * k + v.base_filters
  for s in block_specs(v):
    i, o, m, g = s["in_ch"], s["out_ch"], s["mid_ch"], s["groups"]
    n += i * m + m  # conv1
    n += m * (m // g) * k + m  # conv2 (grouped)
    n += m * o + o  # conv3
    n += o * (o // 2) + o // 2  # se_fc1
    n += (o // 2) * o + o  # se_fc2
  return n


def paper_param_count(size: str | Net1DVariant, in_channels: int = 1) -> int:
  """Parameter count as the paper/README reports it: including the never-used BN affine params."""
  v = as_variant(size)
  bn = v.base_filters + sum(s["in_ch"] + 2 * s["mid_ch"] for s in block_specs(v))
  return used_param_count(size, in_channels) + 2 * bn
