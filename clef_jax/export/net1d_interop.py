"""Net1D weights between Flax params and the official PyTorch checkpoints (CLEF, ECGFounder).

All key/layout knowledge lives in `net1d_layout.state_dict_table`. This module only walks that
table. It imports neither JAX nor (until a torch-specific function runs) torch: params come back
as nested dicts of float32 numpy arrays, which `Module.apply` accepts directly. Files are
`torch_files`'.

Accepted checkpoint shapes on import:
  - a bare `Net1D.state_dict()`;
  - a Lightning checkpoint `{"state_dict": {"backbone.<key>": ...}, ...}` (CLEF, docs/method.md §I); other
    methods' modules (`backbone_target.*`, `backbone_k.*`, `predictor.*`, `queue`, `queue_ptr`)
    are ignored with one log line;
  - an ECGFounder checkpoint `{"state_dict": {"<key>" or "module.<key>": ...}}` (medium, 1 or 12
    leads, 150-way `dense` head).
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from clef_jax import arch
from clef_jax.export import net1d_layout, strict

# Top-level modules of other pretraining methods that may share a Lightning checkpoint with
# `backbone` (docs/method.md §A.5): BYOL's target network and predictor, MoCo's key encoder and queue.
OTHER_METHOD_PREFIXES = ("backbone_target.", "backbone_k.", "predictor.")
OTHER_METHOD_KEYS = ("queue", "queue_ptr")


def _layout_to_torch(rule: str, a: np.ndarray) -> np.ndarray:
  if rule == "conv":
    return a.transpose(2, 1, 0)  # (K, I/g, O) -> (O, I/g, K)
  if rule == "linear":
    return a.T  # (I, O) -> (O, I)
  return a


def _layout_to_flax(rule: str, a: np.ndarray) -> np.ndarray:
  if rule == "conv":
    return a.transpose(2, 1, 0)  # (O, I/g, K) -> (K, I/g, O)
  if rule == "linear":
    return a.T  # (O, I) -> (I, O)
  return a


def _in_channels_notes(shapes: Mapping[str, tuple[int, ...]], in_channels: int) -> list[str]:
  w = shapes.get("first_conv.conv.weight")
  if w is not None and len(w) == 3 and w[1] != in_channels:
    return [f"first_conv.conv.weight has {w[1]} input channels; pass in_channels={w[1]}."]
  return []


def _size_notes(shapes: Mapping[str, tuple[int, ...]], size: str, in_channels: int) -> list[str]:
  """Names the Net1D size whose layout the shapes do match (the commonest mistake)."""
  for other in arch.SIZES:
    if other == size:
      continue
    table = net1d_layout.state_dict_table(other, in_channels)
    expected = {e.torch_key: tuple(e.torch_shape) for e in table if e.rule != "bn"}
    if all(shapes.get(k) == s for k, s in expected.items()):
      return [f"these are Net1D-{other} weights: load them as size {other}"]
  return []


# ---------------------------------------------------------------------------------------------
# Flax params <-> state dict.
# ---------------------------------------------------------------------------------------------


def to_torch_state_dict(
  params: Mapping[str, Any], *, size: str, in_channels: int = 1
) -> collections.OrderedDict[str, Any]:
  """Flax Net1D params -> the official PyTorch `state_dict` (keys, shapes, dtypes and order).

  BN entries (never used by Net1D) are filled with BatchNorm1d's initial values so that the
  official model loads the result with `strict=True`. A `dense` head in `params` becomes
  `dense.{weight,bias}`.

  Args:
    params: the `params` collection (or `{"params": params}`) of
      `create_backbone("net1d", size, in_channels=in_channels, ...)`; jax or numpy arrays.
    size: "small" | "medium" | "large".
    in_channels: input leads the params were built for.

  Returns:
    OrderedDict of contiguous CPU torch tensors: float32, `num_batches_tracked` int64 0-d.

  Raises:
    ValueError: listing every missing, unexpected or wrongly shaped Flax param.
  """
  torch = strict.import_torch()
  flat = strict.flat_numpy_params(params)
  num_classes = flat[("dense", "kernel")].shape[-1] if ("dense", "kernel") in flat else None
  table = net1d_layout.state_dict_table(size, in_channels, num_classes)
  expected = {e.flax_path: e for e in table if e.flax_path is not None}
  problems = strict.compare(
    {p: a.shape for p, a in flat.items()},
    {p: e.flax_shape for p, e in expected.items()},
    name="/".join,
  )
  notes = []
  if ("stem_conv", "kernel") in flat and flat[("stem_conv", "kernel")].shape[1] != in_channels:
    notes.append(f"stem_conv/kernel has {flat[('stem_conv', 'kernel')].shape[1]} input channels.")
  strict.raise_mismatch(
    f"Flax params for Net1D({size}, in_channels={in_channels})", "Net1D", *problems, notes
  )

  out = collections.OrderedDict()
  for e in table:
    if e.flax_path is None:
      if e.torch_key.endswith("num_batches_tracked"):
        out[e.torch_key] = torch.zeros((), dtype=torch.int64)
      else:
        out[e.torch_key] = torch.full(e.torch_shape, e.bn_value, dtype=torch.float32)
    else:
      # Always a fresh, writable, C-contiguous float32 copy: the tensor must not alias params.
      a = np.array(_layout_to_torch(e.rule, flat[e.flax_path]), dtype=np.float32, order="C")
      out[e.torch_key] = torch.from_numpy(a)
  return out


def _extract_state_dict(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
  """`ckpt.get("state_dict", ckpt)`, minus DataParallel's `module.` and the first `backbone.`."""
  sd = checkpoint.get("state_dict", checkpoint)
  if not isinstance(sd, Mapping):
    raise ValueError(f"checkpoint['state_dict'] is a {type(sd).__name__}, not a mapping.")
  out = {}
  for key, value in sd.items():
    k = key[len("module.") :] if key.startswith("module.") else key
    k = k[len("backbone.") :] if k.startswith("backbone.") else k
    if k in out:
      raise ValueError(f"Two checkpoint keys map to {k!r} after prefix stripping (e.g. {key!r}).")
    out[k] = value
  return out


def from_torch_state_dict(
  state_dict: Mapping[str, Any], *, size: str, in_channels: int = 1, num_classes: int | None = None
) -> dict[str, Any]:
  """Official PyTorch Net1D weights -> Flax params (float32 numpy arrays).

  Args:
    state_dict: a bare state dict, or a checkpoint dict holding one under "state_dict"
      (Lightning, ECGFounder). Values: torch tensors or numpy arrays. A leading `module.`
      (DataParallel) and the first leading `backbone.` (Lightning) are stripped.
    size: "small" | "medium" | "large".
    in_channels: input leads of the checkpoint (1 for CLEF; 1 or 12 for ECGFounder).
    num_classes: None -> backbone only; `dense.*` keys, if any, are ignored (logged). An int ->
      the `dense` head is required and loaded (ECGFounder: 150).

  Returns:
    Flax `params` for `create_backbone("net1d", size, in_channels=..., num_classes=...)`.

  Raises:
    ValueError: listing every missing, unexpected or wrongly shaped Net1D key. BN entries are
      optional (dropped) but must have the right shape when present.
  """
  sd = _extract_state_dict(state_dict)
  table = net1d_layout.state_dict_table(size, in_channels, num_classes)
  by_key = {e.torch_key: e for e in table}

  ignored = [k for k in sd if k.startswith(OTHER_METHOD_PREFIXES) or k in OTHER_METHOD_KEYS]
  if ignored:
    logging.info(
      "Ignoring %d non-backbone checkpoint entries of other pretraining methods "
      "(backbone_target/backbone_k/predictor/queue).",
      len(ignored),
    )
  if not num_classes:
    head = [k for k in sd if k.startswith("dense.")]
    if head:
      logging.info(
        "Ignoring the classification head (%s); pass num_classes to load it.", ", ".join(head)
      )
    ignored += head
  ignored_set = set(ignored)
  sd = {k: v for k, v in sd.items() if k not in ignored_set}

  shapes = {k: tuple(np.shape(v)) for k, v in sd.items()}
  problems = strict.compare(
    shapes,
    {k: e.torch_shape for k, e in by_key.items()},
    required=[e.torch_key for e in table if e.rule != "bn"],
  )
  strict.raise_mismatch(
    f"State dict for Net1D({size}, in_channels={in_channels}, num_classes={num_classes})",
    "Net1D",
    *problems,
    _in_channels_notes(shapes, in_channels) + _size_notes(shapes, size, in_channels),
  )

  what = f"Net1D({size}) weights"
  strict.check_values(
    what,
    {
      e.torch_key: strict.to_numpy(sd[e.torch_key])
      for e in table
      if e.flax_path is not None and e.torch_key in sd
    },
  )
  flat, non_initial = {}, []
  for e in table:
    if e.torch_key not in sd:
      continue  # Only optional BN entries can be absent here.
    a = strict.to_numpy(sd[e.torch_key])
    if e.flax_path is None:
      if not np.all(a == e.bn_value):
        non_initial.append(e.torch_key)
      continue
    flat[e.flax_path] = np.array(_layout_to_flax(e.rule, a), dtype=np.float32, order="C")
  if non_initial:
    logging.warning(
      "%d BatchNorm entries hold non-initial values (%s ...); Net1D never uses BN "
      "(use_bn=False), so they are dropped. Was this model trained with use_bn=True?",
      len(non_initial),
      ", ".join(non_initial[:5]),
    )
  return strict.unflatten(flat)
