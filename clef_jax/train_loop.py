"""`train_and_evaluate(config, workdir)`: CLEF pretraining from a config, resumable, multi-host.

One flat function in banner sections (house style §3.1, big_vision's trainer):

    Mesh                     devices -> ("data",) mesh; batch divisibility checks
    Data                     built TFDS archive (the demo's synthetic one is built on the fly)
                             -> grain iterator of globally sharded batches
    Model + Optimizer        backbone, AdamW + warm-restart cosine, the pure train step
    Shard + Init             abstract state -> shardings -> jitted step
    Restore                  workdir checkpoint > config.init_from > fresh init
    Loop                     step, metrics (one step late, so the host never stalls the device),
                             checkpoints, SIGTERM, non-finite guard
    Checkpoint+Export+Eval   final checkpoint, PyTorch export, linear probe, plots

Library code below never reads flags; `config` is unpacked into explicit keyword arguments here.
Failures the user can fix raise `ConfigError` (one line, no traceback from `main.py`).
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import pathlib
import signal
import subprocess
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from clef_jax import checkpoint
from clef_jax.data import schema
from clef_jax import embed
from clef_jax import input_pipeline
from clef_jax import models
from clef_jax import monitoring
from clef_jax import optim
from clef_jax import probe
from clef_jax import sharding as sharding_lib
from clef_jax import train

# Batch entries the train step reads (the iterator also yields `index` and `leads`).
STEP_KEYS = ("views", "risk", "rate_meta")
# Metrics that must stay finite; `l2_params` is measured *after* the update, so a step that
# poisons the weights is caught before its state can be checkpointed.
FINITE_KEYS = ("loss", "l2_grads", "l2_params")
# Exit status after a SIGTERM save: 128 + SIGTERM, so schedulers see "interrupted", not "done".
PREEMPTED_EXIT_CODE = 128 + signal.SIGTERM

DEMO_DATASET = "synthetic_ecg"
BUILD_HINTS = {
    "mimic_iv_ecg": (
        "MIMIC-IV-ECG needs a PhysioNet account (https://physionet.org/content/mimic-iv-ecg/1.0/) "
        "and CLEF's mimiciv_metadata_with_score2.csv (Zenodo 17572734). Build it with\n"
        "  python -m clef_jax.build mimic_iv_ecg --config {config} --manual_dir ~/mimic-iv-ecg "
        "--data_dir {data_dir} --option metadata_csv=~/mimiciv_metadata_with_score2.csv "
        "--option num_workers=8"),
    "physionet_challenge": (
        "Download the PhysioNet/CinC Challenge 2021 training data "
        "(https://physionet.org/content/challenge-2021/1.0.3/) and build it with\n"
        "  python -m clef_jax.build physionet_challenge --config {config} --manual_dir "
        "~/challenge-2021 --data_dir {data_dir}"),
}


class ConfigError(ValueError):
  """A misconfiguration the user can fix; `main.py` prints it without a traceback."""


class TrainingError(RuntimeError):
  """The run cannot continue (e.g. a non-finite loss); the last good checkpoint is kept."""


class Preempted(Exception):
  """SIGTERM (or a multi-host preemption notice) arrived; a checkpoint was saved."""


def _log(msg: str, *args: Any) -> None:
  """Console line from process 0 only (every process logs through absl otherwise)."""
  if jax.process_index() == 0:
    print(msg % args if args else msg, flush=True)


# ------------------------------------------------------------------------------------------------
# Data helpers.
# ------------------------------------------------------------------------------------------------
def _build_demo_archive(data_dir: pathlib.Path, build_kwargs: dict[str, Any]) -> pathlib.Path:
  """Builds the synthetic archive into `data_dir` (if absent) and returns its version directory.

  The build runs in a child process with its output in `data_dir/build.log` (TFDS prints a
  progress bar per split); only process 0 builds, the others wait for it at a barrier. Finished
  builds are listed in `data_dir/demo_archives.json` (build options -> directory), so a rerun or a
  second run sharing the directory skips the child process.
  """
  data_dir.mkdir(parents=True, exist_ok=True)
  index_path = data_dir / "demo_archives.json"
  key = json.dumps(build_kwargs, sort_keys=True)

  def lookup():
    index = json.loads(index_path.read_text()) if index_path.is_file() else {}
    path = index.get(key)
    return pathlib.Path(path) if path and (pathlib.Path(path) / "dataset_info.json").is_file() \
        else None

  if jax.process_index() == 0 and lookup() is None:
    cmd = [sys.executable, "-m", "clef_jax.build", DEMO_DATASET, "--data_dir", os.fspath(data_dir)]
    for k, v in build_kwargs.items():
      cmd += ["--option", f"{k}={json.dumps(v)}"]
    start = time.monotonic()
    log_path = data_dir / "build.log"
    with open(log_path, "w") as log_file:
      rc = subprocess.run(cmd, stdout=log_file, stderr=subprocess.STDOUT, check=False,
                          cwd=pathlib.Path(__file__).resolve().parents[1]).returncode
    lines = log_path.read_text().splitlines()
    # The build CLI's last line is "report: <version dir>/build_report.json".
    reports = [l[len("report: "):] for l in lines if l.startswith("report: ")]
    if rc or not reports:
      raise ConfigError(f"Building the demo archive failed (exit {rc}); see {log_path}.")
    index = json.loads(index_path.read_text()) if index_path.is_file() else {}
    index[key] = os.fspath(pathlib.Path(reports[-1]).parent)
    monitoring.atomic_write_text(index_path, json.dumps(index, indent=2) + "\n")
    summary = [l for l in lines if l.startswith(DEMO_DATASET)]
    _log("data: %s (%.0f s)", summary[-1] if summary else DEMO_DATASET, time.monotonic() - start)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices("demo archive built")
  path = lookup()
  if path is None:
    raise ConfigError(f"The demo archive is missing from {index_path}.")
  return path


def _resolve_dataset(cfg: ml_collections.ConfigDict, workdir: pathlib.Path) -> pathlib.Path:
  """`config.input` -> the built dataset's version directory, building the demo archive."""
  data_dir = pathlib.Path(cfg.data_dir.format(workdir=workdir)).expanduser().absolute()
  if cfg.auto_build:
    if cfg.dataset.split("/")[0] != DEMO_DATASET:
      raise ConfigError(f"input.auto_build only builds {DEMO_DATASET}, not {cfg.dataset}; build "
                        "real archives with `python -m clef_jax.build` (docs/datasets.md).")
    return _build_demo_archive(data_dir, dict(cfg.build))
  name, _, config_name = cfg.dataset.partition("/")
  root = data_dir / name / config_name if config_name else data_dir / name
  versions = sorted(p for p in root.glob("*") if (p / "dataset_info.json").is_file()) \
      if root.is_dir() else []
  if not versions:
    hint = BUILD_HINTS.get(name, "Build it with `python -m clef_jax.build {name} ...` "
                           "(docs/datasets.md).").format(config=config_name or "default",
                                                        data_dir=data_dir, name=name)
    raise ConfigError(
        f"Dataset {cfg.dataset} is not built in {data_dir} (no {root}/<version>/).\n{hint}\n"
        "or point --config.input.data_dir at an existing build. To try the whole pipeline on "
        "synthetic data instead (no download):\n"
        "  python -m clef_jax.main --config=configs/medium.py:demo --workdir=/tmp/clef_demo")
  return versions[-1]


def _dataset_facts(version_dir: pathlib.Path) -> dict[str, Any]:
  """What the manifest records about a dataset: path, splits, build report."""
  facts: dict[str, Any] = {"path": os.fspath(version_dir)}
  for name in ("dataset_info.json", "build_report.json"):
    path = version_dir / name
    if path.is_file():
      data = json.loads(path.read_text())
      if name == "dataset_info.json":
        facts["splits"] = {s["name"]: sum(int(n) for n in s.get("shardLengths", []))
                           for s in data.get("splits", [])}
        facts["version"] = data.get("version")
      else:
        facts["build_report"] = data
  return facts


# ------------------------------------------------------------------------------------------------
# Restore helpers.
# ------------------------------------------------------------------------------------------------
def load_init_weights(path: str, *, model_name: str, size: str, abstract_backbone: Any) -> Any:
  """`config.init_from` -> backbone params (host arrays), from Orbax or a PyTorch file.

  Raises:
    ConfigError: missing path, or weights that do not fit the configured backbone.
  """
  p = pathlib.Path(path).expanduser()
  if not p.exists():
    raise ConfigError(f"config.init_from: no such file or directory: {p}")
  if p.is_dir():
    try:
      step_dir = checkpoint.resolve_step_dir(p)
    except FileNotFoundError as e:
      raise ConfigError(f"config.init_from: {e}") from None
    target = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=jax.sharding.SingleDeviceSharding(
            jax.local_devices()[0])), abstract_backbone)
    try:
      params = checkpoint.restore_backbone(step_dir, target)
    except Exception as e:  # Orbax reports shape/tree mismatches in many exception types.
      raise ConfigError(f"config.init_from: {step_dir} does not hold a {model_name}-{size} "
                        f"backbone ({type(e).__name__}: {str(e).splitlines()[0][:200]}).") from None
    return jax.device_get(params)
  try:
    return checkpoint.load_backbone_torch(p, name=model_name, size=size)
  except (ValueError, ImportError, RuntimeError) as e:  # RuntimeError: not a torch file.
    raise ConfigError(f"config.init_from: {p}: {str(e).splitlines()[0]}") from None


def _check_resume_config(saved: dict[str, Any], config: ml_collections.ConfigDict,
                         step_dir: pathlib.Path) -> None:
  """Refuses to resume a checkpoint whose model or method differs from the config."""
  for section, key in (("model", "name"), ("model", "size"), (None, "method")):
    old = saved.get(section, {}).get(key) if section else saved.get(key)
    new = config[section][key] if section else config[key]
    if old is not None and old != new:
      name = f"{section}.{key}" if section else key
      raise ConfigError(f"{step_dir} was written with {name}={old!r}, but the config says "
                        f"{new!r}; use a new --workdir (or the old config).")


class _StopSignal:
  """SIGTERM -> a flag the loop checks between steps (single process).

  Multi-process runs leave SIGTERM to JAX's preemption notifier and ask the checkpoint manager
  (`reached_preemption`), which agrees on one step across hosts.
  """

  def __init__(self):
    self.requested = False
    self._previous = None
    if jax.process_count() == 1:
      self._previous = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True

  def restore(self):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def _host_metrics(metrics: dict[str, jax.Array]) -> dict[str, float]:
  return {k: float(v) for k, v in jax.device_get(metrics).items()}


def _gather_to_host(tree: Any) -> Any:
  """Fully-addressable numpy copy of a (possibly fsdp-sharded, multi-process) pytree."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  from jax.experimental import multihost_utils
  return multihost_utils.process_allgather(tree, tiled=True)


def _loss_kwargs(method: str, loss: ml_collections.ConfigDict) -> dict[str, Any]:
  if method == "clef":
    return dict(loss)
  if method in ("simclr", "moco"):
    return {"temperature": loss.temperature}
  return {}


# ------------------------------------------------------------------------------------------------
# Model and optimiser from config sections (also used by the export CLI).
# ------------------------------------------------------------------------------------------------
def create_model(model_cfg: Any):
  """`config.model` -> the backbone module (single-lead input)."""
  return models.create_backbone(model_cfg["name"], model_cfg["size"], in_channels=1,
                                dtype=jnp.dtype(model_cfg["dtype"]), remat=model_cfg["remat"])


def create_optimizer(optim_cfg: Any, steps_per_epoch: int):
  """`config.optim` -> `(tx, lr_fn)` (`optim.make_optimizer`)."""
  return optim.make_optimizer(
      learning_rate=optim_cfg["learning_rate"], weight_decay=optim_cfg["weight_decay"],
      b1=optim_cfg["b1"], b2=optim_cfg["b2"], eps=optim_cfg["eps"],
      schedule=optim_cfg["schedule"], interval=optim_cfg["interval"],
      steps_per_epoch=steps_per_epoch, t0=optim_cfg["t0"], t_mult=optim_cfg["t_mult"],
      eta_min=optim_cfg["eta_min"], grad_clip_norm=optim_cfg["grad_clip_norm"] or None)


def state_kwargs(config: Any, model, tx) -> dict[str, Any]:
  """`train.create_train_state` keyword arguments (everything but the rng and weights)."""
  return dict(model=model, tx=tx, method=config["method"],
              init_shape=(1, config["input"]["window"], 1),
              moco_queue_size=config["moco"]["queue_size"])


# ------------------------------------------------------------------------------------------------
# The run.
# ------------------------------------------------------------------------------------------------
def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str | os.PathLike) -> dict[str, Any]:
  """Pretrains a backbone as `config` says, resuming from `workdir` if it holds a checkpoint.

  Args:
    config: a `configs/*.py` config (see `configs/base.py` for every field).
    workdir: run directory: checkpoints, metrics, TensorBoard, plots, export, manifest.

  Returns:
    `{"step": final step, "probe": {...} or None, "export": path or None}`.

  Raises:
    ConfigError: misconfiguration (bad batch size, missing dataset or file, ...).
    TrainingError: non-finite loss (the last good checkpoint is left as the latest).
    Preempted: SIGTERM; a checkpoint of the current step was written first.
  """
  workdir = pathlib.Path(workdir).expanduser().absolute()
  is_writer = jax.process_index() == 0
  if is_writer:
    workdir.mkdir(parents=True, exist_ok=True)
  t_start = time.monotonic()

  # ==============================================================================================
  # Mesh.
  # ==============================================================================================
  num_devices = config.mesh.num_devices or jax.device_count()
  if num_devices > jax.device_count():
    raise ConfigError(f"mesh.num_devices={num_devices} but only {jax.device_count()} devices.")
  if jax.process_count() > 1 and num_devices != jax.device_count():
    raise ConfigError("mesh.num_devices must be 0 (all devices) in a multi-process run.")
  batch_size = config.input.batch_size
  if batch_size % num_devices or batch_size % jax.process_count():
    raise ConfigError(
        f"input.batch_size={batch_size} must be divisible by the {num_devices} devices and "
        f"{jax.process_count()} processes "
        f"(try batch={num_devices * max(1, batch_size // num_devices)}).")
  mesh = sharding_lib.make_mesh(num_devices)
  _log("mesh: %d devices (%s) in %d process(es); global batch %d", num_devices,
       jax.devices()[0].device_kind, jax.process_count(), batch_size)

  # ==============================================================================================
  # Data.
  # ==============================================================================================
  if config.input.lead != "random":
    try:
      schema.lead_index(config.input.lead)
    except KeyError as e:
      raise ConfigError(str(e.args[0])) from None
  noise_mat = config.input.noise_mat and os.path.expanduser(config.input.noise_mat)
  if noise_mat and not os.path.isfile(noise_mat):
    raise ConfigError(f"input.noise_mat: no such file: {noise_mat}")
  dataset_dir = _resolve_dataset(config.input, workdir)
  train_source = input_pipeline.load_data_source(os.fspath(dataset_dir), split=config.input.split)
  steps_per_epoch = len(train_source) // batch_size
  if steps_per_epoch < 1:
    raise ConfigError(f"The {config.input.split} split has {len(train_source)} records, fewer "
                      f"than one batch of {batch_size}.")
  total_steps = config.total_steps or config.num_epochs * steps_per_epoch
  augment = input_pipeline.AugmentConfig(
      p_same_lead=config.input.p_same_lead, noise=config.input.noise, noise_mat=noise_mat or None,
      p_zero_mask=config.input.p_zero_mask, faithful=config.input.faithful)
  train_iter = input_pipeline.make_pretrain_iterator(
      data_source=train_source, global_batch_size=batch_size, seed=config.seed,
      process_index=jax.process_index(), process_count=jax.process_count(),
      num_workers=config.input.num_workers, augment=augment, window=config.input.window,
      lead_policy=config.input.lead, sharding=sharding_lib.batch_sharding(mesh),
      read_threads=config.input.read_threads)
  _log("data: %s, %d %s records, %d steps/epoch, %d steps", dataset_dir, len(train_source),
       config.input.split, steps_per_epoch, total_steps)

  # ==============================================================================================
  # Model + Optimizer.
  # ==============================================================================================
  try:
    model = create_model(config.model)
    tx, lr_fn = create_optimizer(config.optim, steps_per_epoch)
    if config.method == "moco" and config.moco.queue_size % batch_size:
      raise ValueError(f"moco.queue_size={config.moco.queue_size} must be a multiple of "
                       f"input.batch_size={batch_size}.")
    step_fn = train.make_train_step(
        model, tx, lr_fn, method=config.method,
        loss_kwargs=_loss_kwargs(config.method, config.loss), byol_tau=config.byol.tau,
        moco_momentum=config.moco.momentum, mesh=mesh)
  except (ValueError, TypeError) as e:
    raise ConfigError(str(e)) from None

  # ==============================================================================================
  # Shard + Init: everything abstract until Restore decides where the weights come from.
  # ==============================================================================================
  init_rng, step_rng = jax.random.split(jax.random.key(config.seed))
  create_kwargs = state_kwargs(config, model, tx)
  abstract_state = jax.eval_shape(
      functools.partial(train.create_train_state, **create_kwargs), init_rng)
  state_sharding = sharding_lib.state_sharding(
      abstract_state, mesh, strategy=config.mesh.strategy,
      fsdp_min_size=config.mesh.fsdp_min_size)
  train_step = train.jit_train_step(step_fn, mesh=mesh, state_sharding=state_sharding)

  # ==============================================================================================
  # Restore. Precedence: a checkpoint in this workdir (resume: weights, optimiser, step and data
  # position) > config.init_from (backbone weights only; fresh optimiser, step 0) > fresh init.
  # ==============================================================================================
  ckpt = checkpoint.Checkpointer(workdir / "checkpoints",
                                 save_interval_steps=config.ckpt.save_interval_steps,
                                 max_to_keep=config.ckpt.max_to_keep,
                                 async_save=config.ckpt.async_save)
  config_json = json.loads(config.to_json())
  latest = ckpt.latest_step()
  fresh_backbone = None                 # The random init, kept for the probe's baseline.
  if latest is not None:
    step_dir = workdir / "checkpoints" / str(latest)
    with contextlib.suppress(FileNotFoundError):
      _check_resume_config(checkpoint.read_config(step_dir), config, step_dir)
    target = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                          abstract_state, state_sharding)
    try:
      state = ckpt.restore(latest, target, data_iter=train_iter)
    except ValueError as e:
      raise ConfigError(f"Cannot resume from {step_dir}: {str(e).splitlines()[0][:300]}; use a "
                        "new --workdir.") from None
    _log("restore: resumed from %s (step %d)", step_dir, latest)
  else:
    backbone = None
    if config.init_from:
      backbone = load_init_weights(config.init_from, model_name=config.model.name,
                                   size=config.model.size,
                                   abstract_backbone=abstract_state.params["backbone"])
      _log("restore: backbone weights from %s", config.init_from)
    state, _ = train.create_sharded_train_state(
        init_rng, mesh=mesh, strategy=config.mesh.strategy,
        fsdp_min_size=config.mesh.fsdp_min_size, backbone_params=backbone, **create_kwargs)
    if backbone is None and config.evals.probe.enabled:
      fresh_backbone = _gather_to_host(state.params["backbone"])
    _log("restore: no checkpoint in %s; %s", workdir / "checkpoints",
         "starting from init_from" if backbone is not None else "fresh init")
  start_step = int(jax.device_get(state.step))
  if is_writer:
    monitoring.write_manifest(
        workdir, config=config_json, start_step=start_step,
        seeds={"seed": config.seed, "data_seed": config.seed, "init_rng": config.seed},
        datasets={"train": _dataset_facts(dataset_dir)})

  # ==============================================================================================
  # Loop.
  # ==============================================================================================
  monitor = monitoring.Monitor(
      workdir, total_steps=total_steps, start_step=start_step,
      signals_per_step=2 * batch_size, every_steps=config.log.every_steps, enabled=is_writer)
  stop = _StopSignal()
  pending = None                        # (step, device metrics) not yet read on the host

  def record(item):
    """Host-reads one step's metrics, refuses non-finite values, logs them."""
    step, metrics = item
    host = _host_metrics(metrics)
    bad = [k for k in FINITE_KEYS if k in host and not math.isfinite(host[k])]
    if bad:
      ckpt.wait()                       # A save of an earlier, finite state may be in flight.
      last = ckpt.latest_step()
      raise TrainingError(
          f"Non-finite {', '.join(bad)} at step {step} ({', '.join(f'{k}={host[k]}' for k in bad)})"
          f"; stopped without saving. Last good checkpoint: "
          f"{workdir / 'checkpoints' / str(last) if last is not None else 'none'}. Lower "
          "optim.learning_rate or set optim.grad_clip_norm, then rerun to resume from it.")
    monitor.write(step, host)

  step = start_step
  if start_step < total_steps:
    _log("train: steps %d -> %d (first step compiles)", start_step, total_steps)
  try:
    while step < total_steps:
      batch = next(train_iter)
      state, metrics = train_step(state, {k: batch[k] for k in STEP_KEYS}, step_rng)
      if pending is not None:
        record(pending)
      if step == start_step:
        jax.block_until_ready(metrics)  # Exclude compilation from steps/s.
        monitor.start_timer(step + 1)
      pending = (step, metrics)
      step += 1
      preempt = stop.requested or ckpt.reached_preemption(step)
      if preempt or step == total_steps or step % config.ckpt.save_interval_steps == 0:
        record(pending)                 # Never checkpoint a state whose step went non-finite.
        pending = None
        # The iterator has yielded exactly `step` batches: its saved position matches the state.
        ckpt.save(step, state, data_iter=train_iter, config=config_json, force=True)
      if preempt:
        ckpt.wait()
        raise Preempted(f"Preempted (SIGTERM): saved {workdir / 'checkpoints' / str(step)}; "
                        "rerun the same command to resume.")
    if pending is not None:
      record(pending)
  finally:
    stop.restore()
    monitor.close()
    ckpt.close()                        # Waits for async saves: never exit mid-write.
  train_time = time.monotonic() - t_start
  _log("train: done at step %d (%.0f s since start)", step, train_time)

  # ==============================================================================================
  # Checkpoint + Export + Eval (the final checkpoint was written by the loop).
  # ==============================================================================================
  result: dict[str, Any] = {"step": step, "probe": None, "export": None}
  backbone_host = _gather_to_host(state.params["backbone"])
  if is_writer and config.ckpt.export_format:
    result["export"] = _export(backbone_host, workdir, config)
  if config.evals.probe.enabled and is_writer:
    if fresh_backbone is None:          # Resumed or init_from: recreate the random init.
      init = jax.jit(functools.partial(train.create_train_state, **create_kwargs))
      fresh_backbone = jax.device_get(init(init_rng).params["backbone"])
    result["probe"] = _probe(model, {"random init": fresh_backbone, "pretrained": backbone_host},
                             dataset_dir, config, workdir)
  if is_writer and config.log.plots:
    paths = monitoring.plot_metrics(workdir)
    if paths:
      _log("plots: %s", ", ".join(os.fspath(p) for p in paths))
  _log("done in %.0f s; workdir %s", time.monotonic() - t_start, workdir)
  return result


def _export(backbone: Any, workdir: pathlib.Path, config: ml_collections.ConfigDict) -> str | None:
  """Writes the backbone as a PyTorch file into `workdir/export/` (process 0)."""
  fmt = config.ckpt.export_format
  ext = {"safetensors": ".safetensors", "state_dict": ".pt"}.get(fmt, ".ckpt")
  # Named like the released weights (clef_small.ckpt, spec §I); other methods get their name.
  path = workdir / "export" / f"{config.method}_{config.model.size}{ext}"
  try:
    path.parent.mkdir(exist_ok=True)
    checkpoint.save_backbone_torch(backbone, path, name=config.model.name, size=config.model.size,
                                   format=fmt)
  except ImportError as e:
    _log("export: skipped (%s)", e)
    return None
  _log("export: %s (%s format%s)", path, fmt,
       "; the official CLEF code loads it" if config.model.name == "net1d" else "")
  return os.fspath(path)


def _probe(model, backbones: dict[str, Any], dataset_dir: pathlib.Path,
           config: ml_collections.ConfigDict, workdir: pathlib.Path) -> dict[str, Any]:
  """Linear probe of each backbone's frozen embeddings; prints and saves the table."""
  cfg = config.evals.probe
  start = time.monotonic()
  tasks = dict(cfg.tasks)
  source_dir = cfg.dataset or os.fspath(dataset_dir)
  limit = cfg.max_records or None
  splits = {}
  for split, names in (("train", ("train",)), ("test", ("validation", "test"))):
    xs, ys = [], {t: [] for t in tasks}
    for name in names:
      source = input_pipeline.load_data_source(source_dir, split=name, lean=False)
      x, labels = embed.source_inputs(source, lead=cfg.lead, window=config.input.window,
                                      label_keys=tasks, limit=limit)
      xs.append(x)
      for t in tasks:
        ys[t].append(labels[t])
    splits[split] = (np.concatenate(xs), {t: np.concatenate(v) for t, v in ys.items()})
  embed_fn = embed.make_embed_fn(model)
  results = {}
  for name, params in backbones.items():
    emb = {s: embed.embed_array(embed_fn, params, x, batch_size=cfg.batch_size)
           for s, (x, _) in splits.items()}
    results[name] = probe.probe_tasks(emb["train"], splits["train"][1], emb["test"],
                                      splits["test"][1], tasks)
  table = probe.format_table(results)
  _log("eval: linear probe on frozen embeddings (lead %s, %d train / %d held-out records, "
       "%.0f s)\n%s", cfg.lead, len(splits["train"][0]), len(splits["test"][0]),
       time.monotonic() - start, table)
  (workdir / "eval").mkdir(exist_ok=True)
  (workdir / "eval" / "probe.json").write_text(json.dumps(results, indent=2) + "\n")
  (workdir / "eval" / "probe.txt").write_text(table + "\n")
  return results
