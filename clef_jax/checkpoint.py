"""Orbax checkpoints of a run: train state + grain iterator position + config, and weight loading.

Layout (one `ocp.CheckpointManager` over `<workdir>/checkpoints`):

    checkpoints/<step>/state/    the `TrainState` (StandardSave; sharded arrays, any topology)
    checkpoints/<step>/data/     the grain iterator state, one JSON per process
    checkpoints/<step>/config/   the resolved config (JSON)

Saves are asynchronous (the arrays are copied to host, then written in a background thread) and
atomic: Orbax writes into a temporary directory and renames it when complete, so a run killed
mid-save leaves the previous checkpoint as the latest, never a half-written one.

Besides the manager, this module reads backbone weights for `config.init_from`, the export CLI
and `embed`: from a workdir, a `checkpoints/` directory, one step directory, or a PyTorch file.
"""

from __future__ import annotations

import logging
import os
import pathlib
from typing import Any, Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp

PyTree = Any


# Orbax's replica-parallel saving splits every replicated array over the devices that hold it, which
# compiles one small slicing program per (shape, device) at the first save: 15 s for 20 tiny arrays
# on 8 CPU devices, 0.2 s without (measured). Splitting pays off only for large arrays, so smaller
# ones are written whole by one replica.
REPLICA_PARALLEL_MIN_BYTES = 2 ** 20
_array_handler_configured = False


def _configure_array_writes() -> None:
  """Registers Orbax's jax.Array handler with `REPLICA_PARALLEL_MIN_BYTES` (once per process)."""
  global _array_handler_configured
  if _array_handler_configured:
    return
  try:  # The metadata store is what Orbax's default handler uses; no public alias exists.
    from orbax.checkpoint._src.metadata import array_metadata_store
    store = array_metadata_store.Store()
  except ImportError:
    store = None
  absl_logger = logging.getLogger("absl")    # Orbax warns on every override; this one is meant.
  level = absl_logger.level
  absl_logger.setLevel(logging.ERROR)
  try:
    ocp.type_handlers.register_type_handler(
        jax.Array, ocp.type_handlers.ArrayHandler(
            array_metadata_store=store,
            min_slice_bytes_for_replica_parallel=REPLICA_PARALLEL_MIN_BYTES), override=True)
  finally:
    absl_logger.setLevel(level)
  _array_handler_configured = True


def _abstract(tree: PyTree) -> PyTree:
  """Arrays (or ShapeDtypeStructs) -> ShapeDtypeStructs that keep their sharding."""
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


class Checkpointer:
  """One `ocp.CheckpointManager` for a run's train state, iterator state and config.

  Args:
    directory: `<workdir>/checkpoints`.
    save_interval_steps: `save(step)` writes only when `step` is a multiple (or `force`; the
      trainer decides itself and always forces).
    max_to_keep: newest checkpoints kept (older ones are deleted after a save completes).
    async_save: write in a background thread; `wait()` blocks until it is on disk.
  """

  def __init__(self, directory: str | os.PathLike, *, save_interval_steps: int = 1000,
               max_to_keep: int | None = 3, async_save: bool = True):
    _configure_array_writes()
    self.directory = pathlib.Path(directory).absolute()
    options = ocp.CheckpointManagerOptions(
        save_interval_steps=max(1, save_interval_steps), max_to_keep=max_to_keep or None,
        enable_async_checkpointing=async_save, cleanup_tmp_directories=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def reached_preemption(self, step: int) -> bool:
    """Multi-host: True at the step all processes agreed to save at after a preemption notice
    (SIGTERM to any of them). Single process without `jax.distributed`: always False. Must be
    called at every step by every process."""
    return self._manager.reached_preemption(step)

  def save(self, step: int, state: PyTree, *, data_iter=None,
           config: Mapping[str, Any] | None = None, force: bool = False) -> bool:
    """Starts saving (returns at once when async); True if a save was started.

    The caller must not advance `data_iter` before this returns: its position is read here.
    """
    import grain  # Lazy: weight-only users of this module need no grain.

    items = {"state": ocp.args.StandardSave(state)}
    if data_iter is not None:
      items["data"] = grain.checkpoint.CheckpointSave(data_iter)
    if config is not None:
      items["config"] = ocp.args.JsonSave(dict(config))
    return self._manager.save(step, args=ocp.args.Composite(**items), force=force)

  def restore(self, step: int, target: PyTree, *, data_iter=None) -> PyTree:
    """Restores the state into `target`'s structure and shardings, and the iterator in place.

    Args:
      step: checkpoint step.
      target: the train state, or its abstract version (ShapeDtypeStructs with shardings).
      data_iter: grain iterator to reposition; skipped when the checkpoint has no `data` item
        (a step-0 checkpoint written by `python -m clef_jax.export --from-torch`).
    """
    import grain

    items = {"state": ocp.args.StandardRestore(_abstract(target))}
    if data_iter is not None and (self.directory / str(step) / "data").exists():
      items["data"] = grain.checkpoint.CheckpointRestore(data_iter)
    return self._manager.restore(step, args=ocp.args.Composite(**items)).state

  def wait(self) -> None:
    """Blocks until every started save is complete on disk."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


# ------------------------------------------------------------------------------------------------
# Reading weights (init_from, export, embed).
# ------------------------------------------------------------------------------------------------
def _step_dirs(root: pathlib.Path) -> list[int]:
  return sorted(int(p.name) for p in root.iterdir() if p.is_dir() and p.name.isdigit()
                and (p / "state").is_dir())


def resolve_step_dir(path: str | os.PathLike) -> pathlib.Path:
  """A workdir, a `checkpoints/` directory or a step directory -> that (latest) step directory.

  Raises:
    FileNotFoundError: with what was looked for.
  """
  path = pathlib.Path(path).expanduser().absolute()
  if (path / "state").is_dir():
    return path
  root = path / "checkpoints" if (path / "checkpoints").is_dir() else path
  steps = _step_dirs(root) if root.is_dir() else []
  if not steps:
    raise FileNotFoundError(f"No Orbax checkpoint in {path} (expected <step>/state/ in it or in "
                            "its checkpoints/ directory).")
  return root / str(steps[-1])


def _read_only_manager(root: pathlib.Path) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(read_only=True, save_interval_steps=0, create=False)
  return ocp.CheckpointManager(root, options=options)


def read_config(step_dir: str | os.PathLike) -> dict[str, Any]:
  """The config saved with a checkpoint (plain dict)."""
  step_dir = pathlib.Path(step_dir)
  if not (step_dir / "config").is_dir():
    raise FileNotFoundError(f"{step_dir} has no saved config.")
  with _read_only_manager(step_dir.parent) as manager:
    return manager.restore(int(step_dir.name),
                           args=ocp.args.Composite(config=ocp.args.JsonRestore())).config


def restore_backbone(step_dir: str | os.PathLike, target: PyTree | None = None) -> PyTree:
  """`state.params["backbone"]` of one checkpoint, nothing else (optimiser state stays on disk).

  Args:
    step_dir: a step directory (`resolve_step_dir`).
    target: abstract backbone params with shardings to restore into; None -> numpy arrays on
      the host (CLIs).
  """
  step_dir = pathlib.Path(step_dir)
  if target is None:
    meta = ocp.PyTreeCheckpointer().metadata(step_dir / "state")
    tree = getattr(meta, "item_metadata", meta)
    tree = getattr(tree, "tree", tree)
    item = {"params": {"backbone": tree["params"]["backbone"]}}   # ArrayMetadata leaves
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), item)
  else:
    item = {"params": {"backbone": _abstract(target)}}
    restore_args = ocp.checkpoint_utils.construct_restore_args(item)
  with _read_only_manager(step_dir.parent) as manager:
    restored = manager.restore(int(step_dir.name), args=ocp.args.Composite(
        state=ocp.args.PyTreeRestore(item, restore_args=restore_args, partial_restore=True)))
  return restored.state["params"]["backbone"]


def load_backbone(path: str | os.PathLike) -> tuple[dict[str, Any], PyTree]:
  """(config dict, host backbone params) of a workdir / checkpoints dir / step dir."""
  step_dir = resolve_step_dir(path)
  return read_config(step_dir), restore_backbone(step_dir)


# ------------------------------------------------------------------------------------------------
# PyTorch files (export, init_from, embed --torch-weights).
# ------------------------------------------------------------------------------------------------
EXPORT_FORMATS = ("lightning", "state_dict", "safetensors")


def save_backbone_torch(params: PyTree, path: str | os.PathLike, *, name: str, size: str,
                        format: str = "lightning") -> None:  # pylint: disable=redefined-builtin
  """Writes backbone params as a PyTorch file (atomically: temp file + rename).

  Net1D files load into the official CLEF code (`lightning`: `{"state_dict": {"backbone.<key>"}}`
  like the released checkpoints, spec §I). MSFormer files load into
  `clef_jax.export.torch_msformer.TorchMSFormer`.
  """
  if format not in EXPORT_FORMATS:
    raise ValueError(f"Unknown format {format!r}; choose one of {EXPORT_FORMATS}.")
  from clef_jax import export  # Lazy: torch.

  if name == "net1d":
    export.save_torch(params, path, size=size, in_channels=1, format=format)
    return
  if name != "msformer":
    raise ValueError(f"No PyTorch export for backbone {name!r}.")
  import torch
  from clef_jax.export import msformer_interop

  sd = msformer_interop.msformer_to_torch_state_dict(params, size=size, in_channels=1)
  path = pathlib.Path(path)
  tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
  try:
    if format == "safetensors":
      from safetensors.torch import save_file
      save_file(dict(sd), tmp, metadata={"model": "msformer", "size": size})
    else:
      torch.save({"state_dict": {f"backbone.{k}": v for k, v in sd.items()}}
                 if format == "lightning" else sd, tmp)
    os.replace(tmp, path)
  finally:
    if tmp.exists():
      tmp.unlink()


def load_backbone_torch(path: str | os.PathLike, *, name: str, size: str) -> PyTree:
  """Reads a PyTorch backbone file (any `EXPORT_FORMATS`, or an official CLEF `.ckpt`)."""
  from clef_jax import export

  if name == "net1d":
    return export.load_torch(path, size=size, in_channels=1)
  if name != "msformer":
    raise ValueError(f"No PyTorch import for backbone {name!r}.")
  from clef_jax.export import msformer_interop

  path = os.fspath(path)
  if path.endswith(".safetensors"):
    from safetensors.torch import load_file
    sd = load_file(path)
  else:
    import torch
    sd = torch.load(path, map_location="cpu", weights_only=True)
  sd = sd.get("state_dict", sd)
  sd = {k[len("backbone."):] if k.startswith("backbone.") else k: v for k, v in sd.items()}
  return msformer_interop.msformer_from_torch_state_dict(sd, size=size, in_channels=1)
