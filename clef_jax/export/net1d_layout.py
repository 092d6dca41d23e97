"""The one table that maps Net1D's Flax parameters to the official PyTorch `state_dict`.

Pure Python (no JAX, no torch), so both the PyTorch twin and the JAX-side interop can use it.

Naming rule, per module (docs/method.md §A.5):

    Flax path                      torch prefix                                    kind
    stem_conv                      first_conv.conv                                 conv
    (none)                         first_bn                                        bn
    stage{s}_block{b}/conv1        stage_list.{s}.block_list.{b}.conv1.conv        conv
    stage{s}_block{b}/conv2        stage_list.{s}.block_list.{b}.conv2.conv        conv
    stage{s}_block{b}/conv3        stage_list.{s}.block_list.{b}.conv3.conv        conv
    stage{s}_block{b}/se_fc1       stage_list.{s}.block_list.{b}.se_fc1            linear
    stage{s}_block{b}/se_fc2       stage_list.{s}.block_list.{b}.se_fc2            linear
    (none)                         stage_list.{s}.block_list.{b}.bn{1,2,3}         bn
    dense                          dense                                           linear (head)

Layout rule, per tensor:

    conv kernel   Flax (K, I/g, O)  <->  torch weight (O, I/g, K)   transpose axes (2, 1, 0)
    dense kernel  Flax (I, O)       <->  torch weight (O, I)        transpose
    bias          (O,)              <->  (O,)                       unchanged
    bn.*          no Flax param; exported with BatchNorm1d's initial values (never used by Net1D)

The sizes and the block layout come from `clef_jax.arch.net1d` (no JAX).
"""

from __future__ import annotations

import dataclasses

from clef_jax.arch import net1d as arch

# BatchNorm1d entries in state_dict order, with the values a freshly built module holds. Net1D in
# CLEF/ECGFounder never calls its BN modules, so trained checkpoints keep exactly these values.
BN_INITIAL: tuple[tuple[str, float], ...] = (
  ("weight", 1.0),
  ("bias", 0.0),
  ("running_mean", 0.0),
  ("running_var", 1.0),
  ("num_batches_tracked", 0.0),
)

# (Flax module name, torch module suffix, kind), in the order the official BasicBlock registers
# its modules (which fixes the state_dict order). `None` Flax name: a BN module with no Flax twin.
BLOCK_MODULES: tuple[tuple[str | None, str, str], ...] = (
  (None, "bn1", "bn"),
  ("conv1", "conv1.conv", "conv"),
  (None, "bn2", "bn"),
  ("conv2", "conv2.conv", "conv"),
  (None, "bn3", "bn"),
  ("conv3", "conv3.conv", "conv"),
  ("se_fc1", "se_fc1", "linear"),
  ("se_fc2", "se_fc2", "linear"),
)


@dataclasses.dataclass(frozen=True)
class Entry:
  """One `state_dict` tensor.

  Attributes:
    torch_key: official key, e.g. "stage_list.0.block_list.0.conv1.conv.weight".
    torch_shape: its shape in PyTorch layout.
    flax_path: ("stage0_block0", "conv1", "kernel"), or None for BN entries.
    rule: "conv" | "linear" | "bias" (layout rules above) or "bn" (no Flax twin).
    bn_value: initial value of a BN entry (None for real parameters).
  """

  torch_key: str
  torch_shape: tuple[int, ...]
  flax_path: tuple[str, ...] | None
  rule: str
  bn_value: float | None = None

  @property
  def flax_shape(self) -> tuple[int, ...] | None:
    if self.rule == "conv":
      return tuple(reversed(self.torch_shape))  # (O, I/g, K) -> (K, I/g, O)
    if self.rule == "linear":
      return self.torch_shape[::-1]  # (O, I) -> (I, O)
    if self.rule == "bias":
      return self.torch_shape
    return None


def _module_entries(
  flax_name: tuple[str, ...] | None, torch_prefix: str, kind: str, weight_shape: tuple[int, ...]
) -> list[Entry]:
  """Expands one module into its state_dict entries (weight/bias, or the five BN entries)."""
  if kind == "bn":
    (n,) = weight_shape
    return [
      Entry(
        f"{torch_prefix}.{name}", () if name == "num_batches_tracked" else (n,), None, "bn", value
      )
      for name, value in BN_INITIAL
    ]
  out_ch = weight_shape[0]
  return [
    Entry(f"{torch_prefix}.weight", weight_shape, flax_name + ("kernel",), kind),
    Entry(f"{torch_prefix}.bias", (out_ch,), flax_name + ("bias",), "bias"),
  ]


def state_dict_table(
  size: str, in_channels: int = 1, num_classes: int | None = None
) -> list[Entry]:
  """The official `Net1D.state_dict()` layout, in order, with each tensor's Flax counterpart.

  Args:
    size: "small" | "medium" | "large".
    in_channels: input leads (1 for CLEF, 1 or 12 for ECGFounder).
    num_classes: width of the `dense` head (ECGFounder: 150); None -> no head (CLEF's Identity).

  Returns:
    Entries in `state_dict()` order: 257 / 507 / 957 for small / medium / large without head.
  """
  arch.check_size(size)
  v = arch.VARIANTS[size]
  base, k = v.base_filters, v.kernel_size
  table = _module_entries(("stem_conv",), "first_conv.conv", "conv", (base, in_channels, k))
  table += _module_entries(None, "first_bn", "bn", (base,))
  for spec in arch.block_specs(v):
    i, o, m, g = spec["in_ch"], spec["out_ch"], spec["mid_ch"], spec["groups"]
    weight_shapes = {
      "bn1": (i,),
      "conv1": (m, i, 1),
      "bn2": (m,),
      "conv2": (m, m // g, k),
      "bn3": (m,),
      "conv3": (o, m, 1),
      "se_fc1": (o // 2, o),
      "se_fc2": (o, o // 2),
    }
    block = f"stage{spec['stage']}_block{spec['block']}"
    torch_block = f"stage_list.{spec['stage']}.block_list.{spec['block']}"
    for flax_name, torch_suffix, kind in BLOCK_MODULES:
      shape_key = flax_name or torch_suffix
      table += _module_entries(
        None if flax_name is None else (block, flax_name),
        f"{torch_block}.{torch_suffix}",
        kind,
        weight_shapes[shape_key],
      )
  if num_classes:
    table += _module_entries(("dense",), "dense", "linear", (num_classes, v.features))
  return table
