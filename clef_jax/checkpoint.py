"""Orbax checkpoints of a run: train state + grain iterator position + config.

Layout (one `ocp.CheckpointManager` over `<workdir>/checkpoints`):

    checkpoints/<step>/state/    the `TrainState` (StandardSave; sharded arrays, any topology)
    checkpoints/<step>/data/     the grain iterator state, one JSON per process
    checkpoints/<step>/config/   the resolved config (JSON)

Saves are asynchronous (the arrays are copied to host, then written in a background thread) and
atomic: Orbax writes into a temporary directory and renames it when complete, so a run killed
mid-save leaves the previous checkpoint as the latest, never a half-written one.

Besides the manager: finding a run's newest step directory, and reading a step's saved config or
its backbone params alone (what `clef_jax.weights` loads a backbone from).
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import re
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

PyTree = Any


# Orbax's replica-parallel saving splits every replicated array over the devices that hold it, which
# compiles one small slicing program per (shape, device) at the first save: 15 s for 20 tiny arrays
# on 8 CPU devices, 0.2 s without (measured). Splitting pays off only for large arrays, so smaller
# ones are written whole by one replica.
REPLICA_PARALLEL_MIN_BYTES = 2**20
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
  absl_logger = logging.getLogger("absl")  # Orbax warns on every override; this one is meant.
  level = absl_logger.level
  absl_logger.setLevel(logging.ERROR)
  try:
    ocp.type_handlers.register_type_handler(
      jax.Array,
      ocp.type_handlers.ArrayHandler(
        array_metadata_store=store, min_slice_bytes_for_replica_parallel=REPLICA_PARALLEL_MIN_BYTES
      ),
      override=True,
    )
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

  def __init__(
    self,
    directory: str | os.PathLike,
    *,
    save_interval_steps: int = 1000,
    max_to_keep: int | None = 3,
    async_save: bool = True,
  ):
    _configure_array_writes()
    self.directory = pathlib.Path(directory).absolute()
    options = ocp.CheckpointManagerOptions(
      save_interval_steps=max(1, save_interval_steps),
      max_to_keep=max_to_keep or None,
      enable_async_checkpointing=async_save,
      cleanup_tmp_directories=True,
    )
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def reached_preemption(self, step: int) -> bool:
    """Multi-host: True at the step all processes agreed to save at after a preemption notice
    (SIGTERM to any of them). Single process without `jax.distributed`: always False. Must be
    called at every step by every process."""
    return self._manager.reached_preemption(step)

  def save(
    self,
    step: int,
    state: PyTree,
    *,
    data_iter=None,
    config: Mapping[str, Any] | None = None,
    force: bool = False,
  ) -> bool:
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
        (a step-0 checkpoint written by `python -m clef_jax.export --from_torch`).
    """
    import grain

    items = {"state": ocp.args.StandardRestore(_abstract(target))}
    if data_iter is not None and (self.directory / str(step) / "data").exists():
      items["data"] = grain.checkpoint.CheckpointRestore(data_iter)
    return self._manager.restore(step, args=ocp.args.Composite(**items)).state

  def restore_newest_readable(
    self,
    target: PyTree,
    *,
    data_iter=None,
    check_config: Callable[[dict | None, pathlib.Path], None] | None = None,
    report: Callable[[str], None] = print,
  ) -> tuple[int, PyTree] | None:
    """Restores the newest step that can be read, trying older steps when one cannot.

    A step whose files are damaged (truncated by a full disk, an interrupted copy) is reported
    through `report` in one line: the step, the file, what was wrong, and the step used instead.
    It is never deleted: once an older step restored, it is moved to
    `<workdir>/unreadable_checkpoints/<step>` so that the run can save that step anew.

    Args:
      target: as `restore`.
      data_iter: as `restore`.
      check_config: called with each candidate's saved config (None when it has none) and its
        step directory before the state is read; what it raises propagates (e.g. a model
        mismatch the user must resolve).
      report: receives the one-line report of each unreadable step.

    Returns:
      `(step, state)`, or None when the directory holds no checkpoint.

    Raises:
      UnreadableCheckpoint: no step could be read; the message is the newest step's failure.
    """
    failures: list[tuple[int, str]] = []
    for step in sorted(self._manager.all_steps(), reverse=True):
      step_dir = self.directory / str(step)
      try:
        config = read_config(step_dir) if (step_dir / "config").is_dir() else None
      except Exception as e:  # noqa: BLE001 -- any read failure makes the step unreadable.
        failures.append((step, describe_failure(e, step_dir)))
        continue
      if check_config is not None:
        check_config(config, step_dir)
      try:
        state = self.restore(step, target, data_iter=data_iter)
      except Exception as e:  # noqa: BLE001 -- TensorStore, JSON and Orbax errors alike.
        failures.append((step, describe_failure(e, step_dir)))
        continue
      for bad, why in failures:
        moved = self._set_aside(bad)
        report(
          f"restore: checkpoint step {bad} is unreadable: {why}; using step {step} "
          f"instead (step {bad} kept, moved to {moved})"
        )
      if failures:
        self._manager.reload()
      return step, state
    if failures:
      step, why = failures[0]
      older = f"; older steps {[s for s, _ in failures[1:]]} failed too" if failures[1:] else ""
      raise UnreadableCheckpoint(f"checkpoint step {step} is unreadable: {why}{older}")
    return None

  def _set_aside(self, step: int) -> pathlib.Path:
    """Moves a step directory out of the manager's view (process 0), keeping every file."""
    aside = self.directory.parent / "unreadable_checkpoints"
    target = aside / str(step)
    n = 1
    while target.exists():  # An earlier damaged copy of the same step stays too.
      target = aside / f"{step}-{n}"
      n += 1
    if jax.process_index() == 0:
      aside.mkdir(exist_ok=True)
      os.replace(self.directory / str(step), target)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils

      multihost_utils.sync_global_devices(f"checkpoint step {step} set aside")
    return target

  def wait(self) -> None:
    """Blocks until every started save is complete on disk."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


class UnreadableCheckpoint(RuntimeError):
  """No checkpoint step of a directory could be restored."""


def describe_failure(error: BaseException, step_dir: pathlib.Path) -> str:
  """`<file>: <what was wrong>` for a failed restore, from the exception and its causes.

  TensorStore names the OCDBT database directory and the array it was reading, e.g.
  `Error reading "opt_state.0.mu..." in OCDBT database at local file ".../state/": Requested
  byte range [...] is not valid for value of size 100`. A JSON error names no file: the first
  metadata file of the step that does not parse is named instead. Otherwise the step directory
  stands for the file.
  """
  chain, seen = [], set()
  e: BaseException | None = error
  while e is not None and id(e) not in seen:  # Explicit causes only: `__context__` holds
    seen.add(id(e))  # library-internal noise (StopIteration, ...).
    chain.append(e)
    e = e.__cause__
  text = "\n".join(str(c) for c in chain)
  where = next((str(c.filename) for c in chain if getattr(c, "filename", None)), None)
  files = re.findall(r'local file "([^"]+)"', text)  # The innermost mention is the exact one.
  if where is None and files:
    where = files[-1].rstrip("/")
  if where is None and any(isinstance(c, json.JSONDecodeError) for c in chain):
    where = _first_bad_json(step_dir)
  if where is None:
    paths = re.findall(re.escape(os.fspath(step_dir)) + r"[^\s\"':,)]*", text)
    where = paths[0] if paths else os.fspath(step_dir)
  array = re.search(r'Error reading "([^"]+)"', text)
  if array:
    where += f" (array {array.group(1).rsplit('/', 1)[0]})"
  # What: the innermost error's own words, without the location already given.
  what = next(
    (str(c).strip().splitlines()[0] for c in reversed(chain) if str(c).strip()),
    type(error).__name__,
  )
  code = re.match(r"[A-Z][A-Z_]+: ", what)  # TensorStore's status, e.g. DATA_LOSS.
  tail = re.split(r'local file "[^"]*": ', what)[-1]  # Without the location given above.
  tail = re.sub(r"\s*\[tensorstore_spec.*$", "", tail)  # The JSON spec dump adds nothing.
  what = (code.group(0) if code and not tail.startswith(code.group(0)) else "") + tail
  return f"{where}: {what[:300]}"


def _first_bad_json(step_dir: pathlib.Path) -> str | None:
  """The first JSON metadata file under `step_dir` that does not parse (array data skipped)."""
  for path in sorted(step_dir.rglob("*")):
    if (
      not path.is_file()
      or path.suffix == ".ocdbt"
      or path.parent.name == "d"
      or path.stat().st_size > 2**24
    ):
      continue
    try:
      text = path.read_text()
    except (OSError, UnicodeDecodeError):
      continue  # Not a text file.
    if not text.lstrip().startswith(("{", "[")):
      continue  # Not JSON (commit markers, ...).
    try:
      json.loads(text)
    except ValueError:
      return os.fspath(path)
  return None


# ------------------------------------------------------------------------------------------------
# Reading one step (clef_jax.weights).
# ------------------------------------------------------------------------------------------------
def _step_dirs(root: pathlib.Path) -> list[int]:
  return sorted(
    int(p.name)
    for p in root.iterdir()
    if p.is_dir() and p.name.isdigit() and (p / "state").is_dir()
  )


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
    raise FileNotFoundError(
      f"No Orbax checkpoint in {path} (expected <step>/state/ in it or in "
      "its checkpoints/ directory)."
    )
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
    return manager.restore(
      int(step_dir.name), args=ocp.args.Composite(config=ocp.args.JsonRestore())
    ).config


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
    item = {"params": {"backbone": tree["params"]["backbone"]}}  # ArrayMetadata leaves
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), item)
  else:
    item = {"params": {"backbone": _abstract(target)}}
    restore_args = ocp.checkpoint_utils.construct_restore_args(item)
  with _read_only_manager(step_dir.parent) as manager:
    restored = manager.restore(
      int(step_dir.name),
      args=ocp.args.Composite(
        state=ocp.args.PyTreeRestore(item, restore_args=restore_args, partial_restore=True)
      ),
    )
  return restored.state["params"]["backbone"]
