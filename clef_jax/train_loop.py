"""`train_and_evaluate(config, workdir)`: CLEF pretraining from a config, resumable, multi-host.

One flat function in banner sections, in the manner of big_vision's trainer:

    Mesh                     devices -> ("data",) mesh; batch divisibility checks
    Data                     built TFDS archive (the demo's synthetic one is built in-process)
                             -> grain iterator of globally sharded batches
    Model + Optimizer        backbone, AdamW + warm-restart cosine, the pure train step
    Shard + Init             abstract state -> shardings -> jitted step
    Restore                  workdir checkpoint > config.init_from > fresh init
    Loop                     step, metrics (one step late, so the host never stalls the device),
                             checkpoints, SIGTERM, non-finite guard
    Checkpoint+Export+Eval   final checkpoint, PyTorch export, the downstream probe, plots

The pieces it assembles (dataset, augmentation, loss, model, optimiser) are in
`clef_jax.train_setup`, and how the run stops and ends (signals, export, probe) in
`clef_jax.train_end`; neither reads flags. Failures the user can fix raise `ConfigError`
(one line, no traceback from `main.py`).
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import signal
import time
from typing import Any

import jax
import ml_collections

from clef_jax import (
  allocator,
  checkpoint,
  input_pipeline,
  monitoring,
  run_lock,
  train,
  train_end,
  weights,
)
from clef_jax import sharding as sharding_lib
from clef_jax import train_setup as setup
from clef_jax.data import built, schema

# The run's errors and config factories, importable from here as before.
from clef_jax.train_setup import (  # noqa: F401
  ConfigError,
  Preempted,
  TrainingError,
  create_optimizer,
  state_kwargs,
)

# Batch entries the train step reads (the iterator also yields `index` and `leads`).
STEP_KEYS = ("views", "risk", "rate_meta")
# Metrics that must stay finite; `l2_params` is measured *after* the update, so a step that
# poisons the weights is caught before its state can be checkpointed.
FINITE_KEYS = ("loss", "l2_grads", "l2_params")
# Exit status after a SIGTERM save: 128 + SIGTERM, so schedulers see "interrupted", not "done".
PREEMPTED_EXIT_CODE = 128 + signal.SIGTERM


def _log(msg: str, *args: Any) -> None:
  """Console line from process 0 only (every process logs through absl otherwise)."""
  if jax.process_index() == 0:
    print(msg % args if args else msg, flush=True)


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
      lambda x: jax.ShapeDtypeStruct(
        x.shape, x.dtype, sharding=jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
      ),
      abstract_backbone,
    )
    try:
      params = weights.load_backbone(step_dir, backbone=model_name, size=size, target=target).params
    except Exception as e:  # Orbax reports shape/tree mismatches in many exception types.
      raise ConfigError(
        f"config.init_from: {step_dir} does not hold a {model_name}-{size} "
        f"backbone ({type(e).__name__}: {str(e).splitlines()[0][:200]})."
      ) from None
    return jax.device_get(params)
  try:
    return weights.load_backbone(p, backbone=model_name, size=size).params
  except (ValueError, ImportError, RuntimeError) as e:  # RuntimeError: not a torch file.
    raise ConfigError(f"config.init_from: {p}: {str(e).splitlines()[0]}") from None


def _check_resume_config(
  saved: dict[str, Any], config: ml_collections.ConfigDict, step_dir: pathlib.Path
) -> None:
  """Refuses to resume a checkpoint whose model or method differs from the config."""
  for section, key in (("model", "name"), ("model", "size"), (None, "method")):
    old = saved.get(section, {}).get(key) if section else saved.get(key)
    new = config[section][key] if section else config[key]
    if old is not None and old != new:
      name = f"{section}.{key}" if section else key
      raise ConfigError(
        f"{step_dir} was written with {name}={old!r}, but the config says "
        f"{new!r}; use a new --workdir (or the old config)."
      )


# ------------------------------------------------------------------------------------------------
# The run.
# ------------------------------------------------------------------------------------------------
def train_and_evaluate(
  config: ml_collections.ConfigDict, workdir: str | os.PathLike
) -> dict[str, Any]:
  """Pretrains a backbone as `config` says, resuming from `workdir` if it holds a checkpoint.

  Args:
    config: a `configs/*.py` config (see `configs/base.py` for every field).
    workdir: run directory: checkpoints, metrics, TensorBoard, plots, export, manifest.

  Returns:
    `{"step": final step, "probe": {...} or None, "export": path or None}`.

  Raises:
    ConfigError: misconfiguration (bad batch size, missing dataset or file, ...).
    TrainingError: non-finite loss (the last good checkpoint is left as the latest).
    Preempted: SIGTERM or SIGINT; a checkpoint of the current step was written first.
  """
  setup.validate_config(config)  # Before the workdir is created: a typo leaves nothing behind.
  workdir = pathlib.Path(workdir).expanduser().absolute()
  is_writer = jax.process_index() == 0
  lock = None
  if is_writer:
    workdir.mkdir(parents=True, exist_ok=True)
    # One run per workdir: a second trainer would interleave checkpoints and logs with this one.
    try:
      lock = run_lock.RunLock(workdir)
    except run_lock.WorkdirLocked as e:
      raise ConfigError(str(e)) from None
  try:
    return _train_and_evaluate(config, workdir, is_writer)
  finally:
    if lock is not None:
      lock.release()


def _train_and_evaluate(
  config: ml_collections.ConfigDict, workdir: pathlib.Path, is_writer: bool
) -> dict[str, Any]:
  """`train_and_evaluate` once the workdir is created and locked."""
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
      f"(try batch={num_devices * max(1, batch_size // num_devices)})."
    )
  mesh = sharding_lib.make_mesh(num_devices)
  _log(
    "mesh: %d devices (%s) in %d process(es); global batch %d; host allocator %s",
    num_devices,
    jax.devices()[0].device_kind,
    jax.process_count(),
    batch_size,
    "cache" if allocator.active() else "system",
  )

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
  dataset_dir = setup.resolve_train_dataset(config.input, workdir)
  train_source = input_pipeline.load_data_source(os.fspath(dataset_dir), split=config.input.split)
  steps_per_epoch = len(train_source) // batch_size
  if steps_per_epoch < 1:
    raise ConfigError(
      f"The {config.input.split} split has {len(train_source)} records, fewer "
      f"than one batch of {batch_size}."
    )
  total_steps = config.total_steps or config.num_epochs * steps_per_epoch
  train_iter = setup.make_train_iterator(config, train_source, mesh)
  _log(
    "data: %s, %d %s records, %d steps/epoch, %d steps",
    dataset_dir,
    len(train_source),
    config.input.split,
    steps_per_epoch,
    total_steps,
  )

  # ==============================================================================================
  # Model + Optimizer.
  # ==============================================================================================
  model, tx, step_fn = setup.make_step(config, mesh, steps_per_epoch)

  # ==============================================================================================
  # Shard + Init: everything abstract until Restore decides where the weights come from.
  # ==============================================================================================
  init_rng, step_rng = jax.random.split(jax.random.key(config.seed))
  init_fn, abstract_state, state_sharding = setup.make_state(config, mesh, model, tx, init_rng)
  # Given backbone weights travel as a jit argument, not as constants baked into the program.
  init_state = jax.jit(
    lambda rng, weights: init_fn(rng, backbone_params=weights), out_shardings=state_sharding
  )
  train_step = train.jit_train_step(step_fn, mesh=mesh, state_sharding=state_sharding)

  # ==============================================================================================
  # Restore. Precedence: a checkpoint in this workdir (resume: weights, optimiser, step and data
  # position) > config.init_from (backbone weights only; fresh optimiser, step 0) > fresh init.
  # ==============================================================================================
  ckpt = checkpoint.Checkpointer(
    workdir / "checkpoints",
    save_interval_steps=config.ckpt.save_interval_steps,
    max_to_keep=config.ckpt.max_to_keep,
    async_save=config.ckpt.async_save,
  )
  config_json = json.loads(config.to_json())
  fresh_backbone = None  # The random init, kept for the probe's baseline.
  target = jax.tree.map(
    lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract_state, state_sharding
  )
  try:
    # A damaged newest step is reported in one line and an older readable one used instead.
    restored = ckpt.restore_newest_readable(
      target,
      data_iter=train_iter,
      report=_log,
      check_config=lambda saved, step_dir: _check_resume_config(saved or {}, config, step_dir),
    )
  except checkpoint.UnreadableCheckpoint as e:
    raise ConfigError(
      f"Cannot resume from {workdir / 'checkpoints'}: {e}; move the damaged "
      "steps away or use a new --workdir."
    ) from None
  if restored is not None:
    latest, state = restored
    _log("restore: resumed from %s (step %d)", workdir / "checkpoints" / str(latest), latest)
  else:
    backbone = None
    if config.init_from:
      backbone = load_init_weights(
        config.init_from,
        model_name=config.model.name,
        size=config.model.size,
        abstract_backbone=abstract_state.params["backbone"],
      )
      _log("restore: backbone weights from %s", config.init_from)
    state = init_state(init_rng, backbone)
    if backbone is None and config.evals.probe.enabled:
      fresh_backbone = train_end.gather_to_host(state.params["backbone"])
    _log(
      "restore: no checkpoint in %s; %s",
      workdir / "checkpoints",
      "starting from init_from" if backbone is not None else "fresh init",
    )
  start_step = int(jax.device_get(state.step))
  if is_writer:
    monitoring.write_manifest(
      workdir,
      config=config_json,
      start_step=start_step,
      seeds={"seed": config.seed, "data_seed": config.seed, "init_rng": config.seed},
      datasets={"train": built.dataset_facts(dataset_dir)},
    )

  # ==============================================================================================
  # Loop.
  # ==============================================================================================
  monitor = monitoring.Monitor(
    workdir,
    total_steps=total_steps,
    start_step=start_step,
    signals_per_step=2 * batch_size,
    every_steps=config.log.every_steps,
    enabled=is_writer,
  )
  stop = train_end.StopSignal()
  pending = None  # (step, device metrics) not yet read on the host

  def record(item):
    """Host-reads one step's metrics, refuses non-finite values, logs them."""
    step, metrics = item
    host = train_end.host_metrics(metrics)
    bad = [k for k in FINITE_KEYS if k in host and not math.isfinite(host[k])]
    if bad:
      ckpt.wait()  # A save of an earlier, finite state may be in flight.
      last = ckpt.latest_step()
      raise TrainingError(
        f"Non-finite {', '.join(bad)} at step {step} ({', '.join(f'{k}={host[k]}' for k in bad)})"
        f"; stopped without saving. Last good checkpoint: "
        f"{workdir / 'checkpoints' / str(last) if last is not None else 'none'}. Lower "
        "optim.learning_rate or set optim.grad_clip_norm, then rerun to resume from it."
      )
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
      preempt = stop.requested is not None or ckpt.reached_preemption(step)
      if preempt or step == total_steps or step % config.ckpt.save_interval_steps == 0:
        record(pending)  # Never checkpoint a state whose step went non-finite.
        pending = None
        # The iterator has yielded exactly `step` batches: its saved position matches the state.
        ckpt.save(step, state, data_iter=train_iter, config=config_json, force=True)
      if preempt:
        ckpt.wait()
        kind = "Interrupted" if stop.requested == signal.SIGINT else "Preempted"
        raise Preempted(
          f"{kind} ({stop.name}): saved {workdir / 'checkpoints' / str(step)}; "
          "rerun the same command to resume.",
          stop.requested or signal.SIGTERM,
        )
    if pending is not None:
      record(pending)
  finally:
    stop.restore()
    monitor.close()
    ckpt.close()  # Waits for async saves: never exit mid-write.
  train_time = time.monotonic() - t_start
  _log("train: done at step %d (%.0f s since start)", step, train_time)

  # ==============================================================================================
  # Checkpoint + Export + Eval (the final checkpoint was written by the loop).
  # ==============================================================================================
  result: dict[str, Any] = {"step": step, "probe": None, "export": None}
  backbone_host = train_end.gather_to_host(state.params["backbone"])
  if is_writer and config.ckpt.export_format:
    result["export"] = train_end.export_backbone(backbone_host, workdir, config)
  if config.evals.probe.enabled and is_writer:
    if fresh_backbone is None:  # Resumed or init_from: recreate the random init.
      fresh_backbone = jax.device_get(jax.jit(init_fn)(init_rng).params["backbone"])
    result["probe"] = train_end.run_probe(
      model,
      {
        "random init": (f"random init (seed {config.seed})", fresh_backbone),
        "pretrained": (os.fspath(workdir), backbone_host),
      },
      dataset_dir,
      config,
      workdir,
    )
  if is_writer and config.log.plots:
    paths = monitoring.plot_metrics(workdir)
    if paths:
      _log("plots: %s", ", ".join(os.fspath(p) for p in paths))
  _log("done in %.0f s; workdir %s", time.monotonic() - t_start, workdir)
  return result
