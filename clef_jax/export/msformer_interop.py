"""MSFormer weights between Flax params and the PyTorch twin's `state_dict`, with strict checks.

Pure Python + numpy: no JAX import, and torch only inside `msformer_to_torch_state_dict`. Params
come back as nested dicts of float32 numpy arrays, which `Module.apply` accepts directly.

Naming rule: a torch key is the Flax path joined with "." and the leaf renamed, so the twin's module
tree mirrors the Flax one (`TorchMSFormer` registers modules under the Flax names):

    Flax path                                  torch key                                  rule
    patch_embed/kernel          (P*C, W0)      patch_embed.weight          (W0, P*C)      transpose
    stage{s}_merge/proj/kernel  (2W', W)       stage{s}_merge.proj.weight  (W, 2W')       transpose
    stage{s}_block{b}/attn/query/kernel (W, W) stage{s}_block{b}.attn.query.weight         transpose
    .../bias                    (O,)           ....bias                    (O,)           copy
    .../norm*/scale             (W,)           ....norm*.weight            (W,)           copy
    .../norm*/bias              (W,)           ....norm*.bias              (W,)           copy

That is: Dense kernel (in, out) <-> Linear weight (out, in); LayerNorm scale/bias <-> weight/bias.

The sizes come from `clef_jax.arch.msformer` (no JAX); `tests/msformer_test.py` asserts that
`param_table` matches `jax.eval_shape` of the Flax model path for path.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from clef_jax.arch import msformer as arch
from clef_jax.export import strict


@dataclasses.dataclass(frozen=True)
class Entry:
  """One tensor: its Flax path and torch key, the layout rule and both shapes."""

  flax_path: tuple[str, ...]
  torch_key: str
  rule: str  # "linear" (transpose) or "copy".
  flax_shape: tuple[int, ...]
  torch_shape: tuple[int, ...]


def _modules(
  size: str, in_channels: int, num_classes: int | None
) -> Iterator[tuple[tuple[str, ...], str, int, int]]:
  """Yields (module path, kind, in, out) in the twin's registration order; kind: dense | norm."""
  v = arch.variant(size)
  widths, depths, ratio = v.widths, v.depths, v.mlp_ratio
  yield ("patch_embed",), "dense", v.patch_size * in_channels, widths[0]
  for s, (w, d) in enumerate(zip(widths, depths)):
    if s > 0:
      yield (f"stage{s}_merge", "norm"), "norm", 2 * widths[s - 1], 2 * widths[s - 1]
      yield (f"stage{s}_merge", "proj"), "dense", 2 * widths[s - 1], w
    for b in range(d):
      blk = f"stage{s}_block{b}"
      yield (blk, "norm1"), "norm", w, w
      for name in ("query", "key", "value", "out"):
        yield (blk, "attn", name), "dense", w, w
      yield (blk, "norm2"), "norm", w, w
      yield (blk, "mlp", "fc1"), "dense", w, ratio * w
      yield (blk, "mlp", "fc2"), "dense", ratio * w, w
    yield (f"stage{s}_norm",), "norm", w, w
  yield ("fusion",), "dense", sum(widths), v.features
  if num_classes:
    yield ("dense",), "dense", v.features, num_classes


def param_table(size: str, in_channels: int = 1, num_classes: int | None = None) -> list[Entry]:
  """Every MSFormer tensor, in the twin's `state_dict` order."""
  arch.check_size(size)
  table = []
  for path, kind, fan_in, fan_out in _modules(size, in_channels, num_classes):
    key = ".".join(path)
    if kind == "dense":
      table.append(
        Entry(path + ("kernel",), f"{key}.weight", "linear", (fan_in, fan_out), (fan_out, fan_in))
      )
      table.append(Entry(path + ("bias",), f"{key}.bias", "copy", (fan_out,), (fan_out,)))
    else:
      table.append(Entry(path + ("scale",), f"{key}.weight", "copy", (fan_out,), (fan_out,)))
      table.append(Entry(path + ("bias",), f"{key}.bias", "copy", (fan_out,), (fan_out,)))
  return table


# ---------------------------------------------------------------------------------------------
# Helpers.
# ---------------------------------------------------------------------------------------------


def _hints(
  patch_fan_in: int | None, has_head: bool, size: str, in_channels: int, num_classes: int | None
) -> list[str]:
  hints = []
  patch = arch.VARIANTS[size].patch_size
  if patch_fan_in is not None and patch_fan_in != patch * in_channels and patch_fan_in % patch == 0:
    hints.append(
      f"the patch embedding takes {patch_fan_in // patch} input channels; pass "
      f"in_channels={patch_fan_in // patch}"
    )
  if has_head and not num_classes:
    hints.append("the weights include a `dense` head; pass num_classes to load it")
  return hints


# ---------------------------------------------------------------------------------------------
# Flax params <-> torch state dict.
# ---------------------------------------------------------------------------------------------


def msformer_to_torch_state_dict(
  params: Mapping[str, Any], *, size: str, in_channels: int = 1
) -> collections.OrderedDict[str, Any]:
  """Flax MSFormer params -> `TorchMSFormer(size, in_channels, num_classes).state_dict()`.

  Args:
    params: the `params` collection (or `{"params": params}`) of
      `MSFormer(size=size, in_channels=in_channels, ...)`; jax or numpy arrays. A `dense` head, if
      present, is exported (its width gives `num_classes`).
    size: "small" | "medium" | "large".
    in_channels: input leads the params were built for.

  Returns:
    OrderedDict of contiguous float32 CPU torch tensors, in the twin's `state_dict` order.

  Raises:
    ValueError: listing every missing, unexpected or wrongly shaped Flax param.
  """
  torch = strict.import_torch()
  arch.check_size(size)
  flat = strict.flat_numpy_params(params)
  head = flat.get(("dense", "kernel"))
  num_classes = head.shape[-1] if head is not None and head.ndim == 2 else None
  table = param_table(size, in_channels, num_classes)
  problems = strict.compare(
    {p: a.shape for p, a in flat.items()}, {e.flax_path: e.flax_shape for e in table}, name="/".join
  )
  patch = flat.get(("patch_embed", "kernel"))
  strict.raise_mismatch(
    f"Flax params for MSFormer({size}, in_channels={in_channels})",
    "MSFormer",
    *problems,
    _hints(
      patch.shape[0] if patch is not None and patch.ndim == 2 else None,
      False,
      size,
      in_channels,
      num_classes,
    ),
  )
  out = collections.OrderedDict()
  for e in table:
    a = flat[e.flax_path]
    a = a.T if e.rule == "linear" else a  # (in, out) -> (out, in)
    # A fresh, writable copy: jax arrays' numpy views are read-only, and the result must not
    # alias the caller's params.
    out[e.torch_key] = torch.from_numpy(np.array(a, dtype=np.float32, order="C"))
  return out


def msformer_from_torch_state_dict(
  state_dict: Mapping[str, Any], *, size: str, in_channels: int = 1, num_classes: int | None = None
) -> dict[str, Any]:
  """`TorchMSFormer` weights -> Flax params (nested dict of float32 numpy arrays).

  Strict: unlike Net1D's importer (which tolerates the official checkpoints' extra entries), every
  key must be expected, present and correctly shaped -- including `dense.*`, which needs
  `num_classes`.

  Args:
    state_dict: `TorchMSFormer.state_dict()` or `msformer_to_torch_state_dict(...)`; torch tensors
      or numpy arrays. A checkpoint dict holding it under "state_dict" is also accepted.
    size: "small" | "medium" | "large".
    in_channels: input leads of the weights.
    num_classes: width of the `dense` head the weights carry; None -> no head.

  Returns:
    Flax `params` for `MSFormer(size=size, in_channels=in_channels, num_classes=num_classes)`.

  Raises:
    ValueError: listing every missing, unexpected or wrongly shaped key.
  """
  arch.check_size(size)
  sd = state_dict.get("state_dict", state_dict)
  if not isinstance(sd, Mapping):
    raise ValueError(f"state_dict['state_dict'] is a {type(sd).__name__}, not a mapping.")
  table = param_table(size, in_channels, num_classes)
  shapes = {k: tuple(np.shape(v)) for k, v in sd.items()}
  patch = shapes.get("patch_embed.weight")
  strict.raise_mismatch(
    f"State dict for MSFormer({size}, in_channels={in_channels}, num_classes={num_classes})",
    "MSFormer",
    *strict.compare(shapes, {e.torch_key: e.torch_shape for e in table}),
    _hints(
      patch[1] if patch is not None and len(patch) == 2 else None,
      "dense.weight" in sd,
      size,
      in_channels,
      num_classes,
    ),
  )
  strict.check_values(
    f"MSFormer({size}) weights", {e.torch_key: strict.to_numpy(sd[e.torch_key]) for e in table}
  )
  flat = {}
  for e in table:
    a = strict.to_numpy(sd[e.torch_key])
    a = a.T if e.rule == "linear" else a  # (out, in) -> (in, out)
    flat[e.flax_path] = np.array(a, dtype=np.float32, order="C")  # Copy: never alias torch memory.
  return strict.unflatten(flat)
