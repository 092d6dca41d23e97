"""Backbone weights: load a backbone from a workdir, a step directory or a PyTorch file; save one.

Sources of `load_backbone`:

    <workdir>/                       a training workdir: its newest checkpoint
    <workdir>/checkpoints/           the same
    <workdir>/checkpoints/<step>/    one step directory
    *.ckpt | *.pth | *.pt            a PyTorch file: a released CLEF checkpoint, an ECGFounder
                                     checkpoint (Net1D), or a `save_backbone` file
    *.safetensors                    the same without pickle (also recognised by its bytes)

Orbax sources name their architecture in the config saved with the checkpoint; for PyTorch files
it is given (`backbone` defaults to "net1d"; `size` is required). The training config's
`init_from`, `python -m clef_jax.export`, `clef_jax.Encoder` / `python -m clef_jax.embed` and the
evaluation CLI all load through here; the trainer's export and the export CLI save through
`save_backbone`. Orbax itself is `clef_jax.checkpoint`; PyTorch files are
`clef_jax.export.torch_files`.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Any

from clef_jax import checkpoint
from clef_jax.export import torch_files

PyTree = Any

FORMATS = torch_files.FORMATS  # Formats of `save_backbone`; `SUFFIXES` names their files.
SUFFIXES = torch_files.SUFFIXES


@dataclasses.dataclass(frozen=True)
class LoadedBackbone:
  """A backbone module with its weights and where they came from.

  Attributes:
    model: the Flax module for inference (`model.apply({"params": params}, x)`): float32 compute,
      no remat, the default `conv_impl`.
    params: the backbone's params (host numpy arrays, or arrays placed as `target` says).
    backbone: "net1d" | "msformer".
    size: "small" | "medium" | "large".
    in_channels: input leads.
    source: the step directory or file that was read (absolute).
    config: the training config saved with an Orbax checkpoint (plain dict); None for PyTorch
      files and for checkpoints saved without one.
  """

  model: Any
  params: PyTree
  backbone: str
  size: str
  in_channels: int
  source: str
  config: dict[str, Any] | None = None


def _saved_model(
  step_dir: pathlib.Path, config: dict[str, Any] | None, backbone: str | None, size: str | None
) -> tuple[str, str]:
  """(name, size) of a checkpoint's backbone; ValueError if it is not the requested one."""
  saved = dict((config or {}).get("model") or {})
  name, sz = saved.get("name", backbone), saved.get("size", size)
  if name is None or sz is None:
    raise ValueError(
      f"{step_dir} has no saved config naming its backbone; give the backbone and size."
    )
  if (backbone is not None and backbone != name) or (size is not None and size != sz):
    raise ValueError(
      f"{step_dir} holds a {name}-{sz} backbone, not the requested {backbone or name}-{size or sz}."
    )
  return name, sz


def load_backbone(
  source: str | os.PathLike,
  *,
  backbone: str | None = None,
  size: str | None = None,
  in_channels: int = 1,
  num_classes: int | None = None,
  target: PyTree | None = None,
) -> LoadedBackbone:
  """Loads a backbone's module and weights from a workdir, a step directory or a weight file.

  Args:
    source: see the module docstring.
    backbone: "net1d" | "msformer". Orbax sources: checked against the saved config when given.
      PyTorch files: default "net1d".
    size: "small" | "medium" | "large". Orbax sources: checked when given. PyTorch files:
      required.
    in_channels: PyTorch files: the checkpoint's input leads. Training checkpoints are
      single-lead.
    num_classes: PyTorch files: also load a `dense` head of this width (ECGFounder: 150).
    target: Orbax sources: abstract backbone params with shardings to restore into (the
      trainer's `init_from`); None -> numpy arrays on the host.

  Raises:
    FileNotFoundError: no such path, or a directory without a checkpoint.
    ValueError: weights that do not fit the requested architecture, a missing size, a file
      that is not a weight file (the message says which).
    ImportError: a PyTorch file without torch installed.
  """
  from clef_jax import models  # Lazy: the module docstring's users may only save.

  path = pathlib.Path(source).expanduser()
  if path.is_dir():
    step_dir = checkpoint.resolve_step_dir(path)
    if in_channels != 1 or num_classes:
      raise ValueError(
        f"{step_dir}: training checkpoints are single-lead and hold no classification head."
      )
    config = checkpoint.read_config(step_dir) if (step_dir / "config").is_dir() else None
    name, sz = _saved_model(step_dir, config, backbone, size)
    params = checkpoint.restore_backbone(step_dir, target)
    return LoadedBackbone(
      model=models.from_config({"name": name, "size": sz}),
      params=params,
      backbone=name,
      size=sz,
      in_channels=1,
      source=os.fspath(step_dir),
      config=config,
    )
  if not path.is_file():
    raise FileNotFoundError(f"No training workdir, checkpoint directory or weight file {path}.")
  name = backbone or "net1d"
  if size is None:
    raise ValueError(f"{path}: the size of PyTorch weights must be given (small | medium | large).")
  params = torch_files.load_torch(
    path, backbone=name, size=size, in_channels=in_channels, num_classes=num_classes
  )
  model = models.from_config(
    {"name": name, "size": size}, in_channels=in_channels, num_classes=num_classes
  )
  return LoadedBackbone(
    model=model,
    params=params,
    backbone=name,
    size=size,
    in_channels=in_channels,
    source=os.fspath(path.absolute()),
  )


# `format` shadows the builtin on purpose: it is the public keyword the API documents.
def save_backbone(
  params: PyTree,
  path: str | os.PathLike,
  *,
  backbone: str,
  size: str,
  in_channels: int = 1,
  format: str = "lightning",
) -> pathlib.Path:  # pylint: disable=redefined-builtin
  """Writes backbone params as a PyTorch file, atomically; returns `path`.

  Net1D files load into the official CLEF code (`lightning` is the layout of the released
  checkpoints); MSFormer files into `clef_jax.export.TorchMSFormer`.

  Args:
    params: the backbone's Flax params (host or device arrays).
    path: destination file.
    backbone: "net1d" | "msformer".
    size: "small" | "medium" | "large".
    in_channels: input leads the params were built for.
    format: one of `FORMATS`.
  """
  torch_files.save_torch(
    params, path, backbone=backbone, size=size, in_channels=in_channels, format=format
  )
  return pathlib.Path(path)
