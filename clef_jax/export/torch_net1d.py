"""PyTorch twin of Net1D with the official module names, so exports load with `strict=True`.

Written for this project from the semantics in docs/method.md §A.2 (not copied from the official code).
Channels-first like the official model: input `(B, C, L)`, output `(B, D)` (or `(B, num_classes)`
with a head). Imports torch and the pure-Python layout table only; no JAX.

The BatchNorm modules (`first_bn`, `bn1`/`bn2`/`bn3` per block) exist only so that `state_dict()`
has the official 257 / 507 / 957 keys; like the official model with `use_bn=False`, the forward
pass never calls them. Dropout modules carry no state and are omitted.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from clef_jax.arch import net1d as arch


def swish(x: torch.Tensor) -> torch.Tensor:
  return x * torch.sigmoid(x)


def _same_pads(length: int, kernel_size: int, stride: int) -> tuple[int, int]:
  """TF/JAX "SAME" padding: output ceil(L/stride), floor(p/2) zeros on the left (docs/method.md §A.2)."""
  out_len = (length + stride - 1) // stride
  p = max(0, (out_len - 1) * stride + kernel_size - length)
  return p // 2, p - p // 2


class ConvPadSame(nn.Module):
  """Conv1d behind constant-zero SAME padding; the Conv1d is the child `conv` (official name)."""

  def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int = 1, groups: int = 1):
    super().__init__()
    self.stride = stride
    self.conv = nn.Conv1d(in_ch, out_ch, kernel_size, stride=stride, groups=groups)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    pads = _same_pads(x.shape[-1], self.conv.kernel_size[0], self.stride)
    return self.conv(F.pad(x, pads))


def max_pool2_same(x: torch.Tensor) -> torch.Tensor:
  """Pads ONE zero on the right (not -inf), then max over pairs: (B, C, L) -> (B, C, ceil(L/2))."""
  return F.max_pool1d(F.pad(x, (0, 1)), kernel_size=2, stride=2)


class Block(nn.Module):
  """Pre-activation bottleneck with SE (r=2) and a max-pooled, channel-centred identity."""

  def __init__(
    self,
    in_ch: int,
    out_ch: int,
    mid_ch: int,
    groups: int,
    stride: int,
    is_first: bool,
    kernel_size: int,
  ):
    super().__init__()
    self.in_ch, self.out_ch, self.stride, self.is_first = in_ch, out_ch, stride, is_first
    # Registration order fixes the state_dict order: bn1, conv1, bn2, conv2, bn3, conv3, se_fc*.
    self.bn1 = nn.BatchNorm1d(in_ch)
    self.conv1 = ConvPadSame(in_ch, mid_ch, 1)
    self.bn2 = nn.BatchNorm1d(mid_ch)
    self.conv2 = ConvPadSame(mid_ch, mid_ch, kernel_size, stride=stride, groups=groups)
    self.bn3 = nn.BatchNorm1d(mid_ch)
    self.conv3 = ConvPadSame(mid_ch, out_ch, 1)
    self.se_fc1 = nn.Linear(out_ch, out_ch // 2)
    self.se_fc2 = nn.Linear(out_ch // 2, out_ch)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    h = x if self.is_first else swish(x)  # The network's first block has no pre-activation.
    h = self.conv1(h)
    h = self.conv2(swish(h))
    h = self.conv3(swish(h))  # (B, out, L')
    e = self.se_fc2(swish(self.se_fc1(h.mean(-1))))  # (B, out)
    h = h * torch.sigmoid(e)[:, :, None]
    identity = x
    if self.stride != 1:
      identity = max_pool2_same(identity)
    if self.out_ch != self.in_ch:
      # Zero channels on both sides; the identity sits in channels [ch1, ch1 + in).
      ch1 = (self.out_ch - self.in_ch) // 2
      identity = F.pad(identity, (0, 0, ch1, self.out_ch - self.in_ch - ch1))
    return h + identity  # No activation after the sum.


class Stage(nn.Module):
  """A stage; its blocks live in `block_list` (official name)."""

  def __init__(self, blocks: list[Block]):
    super().__init__()
    self.block_list = nn.ModuleList(blocks)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    for block in self.block_list:
      x = block(x)
    return x


class TorchNet1D(nn.Module):
  """Net1D as in CLEF (`create_net1d_by_size`) and ECGFounder, with official state_dict keys.

  Args:
    size: "small" | "medium" | "large".
    in_channels: input leads (CLEF: 1; ECGFounder: 1 or 12).
    num_classes: None -> `dense` is Identity and the pooled embedding is returned (CLEF; no
      `dense.*` keys); an int -> `dense` is a Linear head (ECGFounder: 150).
  """

  def __init__(self, size: str, in_channels: int = 1, num_classes: int | None = None):
    super().__init__()
    arch.check_size(size)
    v = arch.VARIANTS[size]
    base = v.base_filters
    self.size, self.in_channels = size, in_channels
    self.first_conv = ConvPadSame(in_channels, base, v.kernel_size, stride=2)
    self.first_bn = nn.BatchNorm1d(base)
    stages: list[list[Block]] = []
    for spec in arch.block_specs(v):
      if spec["block"] == 0:
        stages.append([])
      stages[-1].append(
        Block(
          spec["in_ch"],
          spec["out_ch"],
          spec["mid_ch"],
          spec["groups"],
          spec["stride"],
          spec["is_first"],
          v.kernel_size,
        )
      )
    self.stage_list = nn.ModuleList(Stage(blocks) for blocks in stages)
    self.dense = nn.Linear(v.features, num_classes) if num_classes else nn.Identity()

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    """Maps `(B, in_channels, L)` to `(B, D)` (or `(B, num_classes)` with a head)."""
    if x.ndim != 3 or x.shape[1] != self.in_channels:
      raise ValueError(
        f"TorchNet1D({self.size}) expects (B, {self.in_channels}, L); got {tuple(x.shape)}."
      )
    x = swish(self.first_conv(x))
    for stage in self.stage_list:
      x = stage(x)
    return self.dense(x.mean(-1))  # Global mean over time, then Identity or head.
