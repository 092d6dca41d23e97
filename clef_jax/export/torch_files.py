"""PyTorch weight files of either backbone: the one format list, one reader, one writer.

No JAX import, and torch only when a file is read or written. Params are nested dicts of float32
numpy arrays (what `Module.apply` accepts). The key and layout conversions are `net1d_interop`'s
(Net1D: files the official CLEF code loads) and `msformer_interop`'s (MSFormer: files
`TorchMSFormer` loads).
"""

from __future__ import annotations

import collections
import os
import pickle
from collections.abc import Mapping
from typing import Any

from clef_jax import files
from clef_jax.arch import BACKBONES
from clef_jax.export import msformer_interop, net1d_interop, strict

# Format -> the suffix a file of it gets. "lightning": `{"state_dict": {"backbone.<key>": tensor}}`,
# like a CLEF pretraining checkpoint and the released `clef_{small,medium,large}.ckpt`;
# "state_dict": `torch.save` of the bare state dict; "safetensors": the bare state dict as
# safetensors (no pickle).
SUFFIXES = {"lightning": ".ckpt", "state_dict": ".pt", "safetensors": ".safetensors"}
FORMATS = tuple(SUFFIXES)


def _check_backbone(backbone: str) -> None:
  if backbone not in BACKBONES:
    raise ValueError(f"No PyTorch weights for backbone {backbone!r}; choose one of {BACKBONES}.")


def _is_safetensors(path: str) -> bool:
  """By extension, else by magic: 8-byte little-endian header length followed by '{'."""
  if path.endswith(".safetensors"):
    return True
  with open(path, "rb") as f:
    head = f.read(9)
  if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":  # torch.save zip / legacy pickle.
    return False
  return len(head) == 9 and head[8:9] == b"{"


def read_torch_file(path: str | os.PathLike) -> Mapping[str, Any]:
  """A `.ckpt` / `.pth` / `.pt` / `.safetensors` file -> the mapping it holds (torch tensors).

  torch files are read with `torch.load(..., weights_only=True)`, which never runs pickled code;
  safetensors files are recognised by extension or magic bytes.

  Raises:
    FileNotFoundError: no such file.
    ValueError: one line naming the file: truncated, damaged or not a weight file, holding
      something other than a mapping, or objects `weights_only` refuses.
  """
  path = os.fspath(path)
  torch = strict.import_torch()
  safetensors = _is_safetensors(path)
  try:
    if safetensors:
      from safetensors.torch import load_file  # pylint: disable=g-import-not-at-top

      checkpoint = load_file(path)
    else:
      checkpoint = torch.load(path, map_location="cpu", weights_only=True)
  except pickle.UnpicklingError as e:
    if "unsupported global" in str(e).lower():  # A pickled object, not bytes that are no pickle.
      raise ValueError(
        f"{path} holds objects that weights_only=True refuses to unpickle. If you trust the "
        "file, extract its state_dict in a separate step and pass it to "
        "from_torch_state_dict."
      ) from e
    raise ValueError(
      f"{path}: not a readable PyTorch weight file (no pickle or zip archive a "
      "state dict is saved as); it is truncated or damaged: download or export "
      "it again."
    ) from e
  except (FileNotFoundError, IsADirectoryError, PermissionError):
    raise
  except Exception as e:  # torch and safetensors fail in many ways on a damaged file.
    first = next((line.strip() for line in str(e).splitlines() if line.strip()), "")
    kind = "safetensors" if safetensors else "PyTorch"
    raise ValueError(
      f"{path}: not a readable {kind} weight file ({type(e).__name__}"
      f"{': ' + first if first else ''}); it is truncated or damaged: download "
      "or export it again."
    ) from e
  if not isinstance(checkpoint, Mapping):
    raise ValueError(f"{path} holds a {type(checkpoint).__name__}, not a state dict.")
  return checkpoint


# `format` shadows the builtin on purpose: it is the public keyword the API documents.
def save_torch(
  params: Mapping[str, Any],
  path: str | os.PathLike,
  *,
  size: str,
  in_channels: int = 1,
  format: str = "lightning",  # pylint: disable=redefined-builtin
  backbone: str = "net1d",
) -> None:
  """Writes Flax backbone params as a PyTorch file, atomically (`files.atomic_write`).

  Args:
    params: Flax params of the backbone (or `{"params": params}`).
    path: destination file.
    size: "small" | "medium" | "large".
    in_channels: input leads the params were built for.
    format: one of `FORMATS`: "lightning" -> `torch.save({"state_dict": {"backbone.<key>":
      tensor}})`, like a CLEF pretraining checkpoint; "state_dict" -> `torch.save` of the bare
      state dict; "safetensors" -> the bare state dict as safetensors (metadata records the
      model and size).
    backbone: "net1d" (the file loads into the official CLEF code) or "msformer" (it loads into
      `TorchMSFormer`).
  """
  if format not in FORMATS:
    raise ValueError(f"Unknown format {format!r}; choose one of {FORMATS}.")
  _check_backbone(backbone)
  torch = strict.import_torch()
  if backbone == "net1d":
    sd = net1d_interop.to_torch_state_dict(params, size=size, in_channels=in_channels)
    metadata = {"format": "pt", "model": "net1d", "size": size, "in_channels": str(in_channels)}
  else:
    sd = msformer_interop.msformer_to_torch_state_dict(params, size=size, in_channels=in_channels)
    metadata = {"model": "msformer", "size": size}
  if format == "lightning":
    obj = {"state_dict": collections.OrderedDict((f"backbone.{k}", v) for k, v in sd.items())}
    files.atomic_write(path, lambda tmp: torch.save(obj, tmp))
  elif format == "state_dict":
    files.atomic_write(path, lambda tmp: torch.save(sd, tmp))
  else:
    from safetensors.torch import save_file  # pylint: disable=g-import-not-at-top

    files.atomic_write(path, lambda tmp: save_file(dict(sd), tmp, metadata=metadata))


def load_torch(
  path: str | os.PathLike,
  *,
  size: str,
  in_channels: int = 1,
  num_classes: int | None = None,
  backbone: str = "net1d",
) -> dict[str, Any]:
  """Reads a PyTorch backbone file into Flax params (float32 numpy arrays).

  Net1D: a CLEF / ECGFounder checkpoint or a `save_torch` file (`net1d_interop.
  from_torch_state_dict` says which layouts it accepts). MSFormer: a `save_torch` file or a
  `TorchMSFormer` state dict (strict: `msformer_interop.msformer_from_torch_state_dict`).

  Args:
    path: checkpoint file (.ckpt / .pth / .pt / .safetensors).
    size: "small" | "medium" | "large".
    in_channels: input leads of the checkpoint.
    num_classes: load the `dense` head of this width (ECGFounder: 150); None -> backbone only.
    backbone: "net1d" or "msformer".
  """
  _check_backbone(backbone)
  checkpoint = read_torch_file(path)
  try:
    if backbone == "net1d":
      return net1d_interop.from_torch_state_dict(
        checkpoint, size=size, in_channels=in_channels, num_classes=num_classes
      )
    sd = checkpoint.get("state_dict", checkpoint)
    if isinstance(sd, Mapping):
      sd = {k[len("backbone.") :] if k.startswith("backbone.") else k: v for k, v in sd.items()}
    return msformer_interop.msformer_from_torch_state_dict(
      sd, size=size, in_channels=in_channels, num_classes=num_classes
    )
  except ValueError as e:  # Name the file: the converters only see its contents.
    raise ValueError(f"{os.fspath(path)}: {e}") from e
