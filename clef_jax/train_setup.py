"""What `train_loop.train_and_evaluate` sets up, from config sections.

The trainer keeps to orchestration; the pieces it assembles live here: the errors it raises, the
checks of the config's numbers, the training dataset (the demo archive built in-process through
`build.build`), the augmentation, loss, model and optimiser from their config sections, and the
train step and state. How the run stops and ends (signals, export, probe) is in
`clef_jax.train_end`. Nothing here reads flags.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import pathlib
import signal
import time
from typing import Any

import jax
import ml_collections

from clef_jax import input_pipeline, models, optim
from clef_jax.data import built


def _log(msg: str, *args: Any) -> None:
  """Console line from process 0 only (every process logs through absl otherwise)."""
  if jax.process_index() == 0:
    print(msg % args if args else msg, flush=True)


DEMO_DATASET = "synthetic_ecg"
BUILD_HINTS = {
  "mimic_iv_ecg": (
    "MIMIC-IV-ECG needs a PhysioNet account (https://physionet.org/content/mimic-iv-ecg/1.0/) "
    "and CLEF's mimiciv_metadata_with_score2.csv (Zenodo 17572734). Build it with\n"
    "  python -m clef_jax.build mimic_iv_ecg --config {config} --manual_dir ~/mimic-iv-ecg "
    "--data_dir {data_dir} --option metadata_csv=~/mimiciv_metadata_with_score2.csv "
    "--option num_workers=8"
  ),
  "physionet_challenge": (
    "Download the PhysioNet/CinC Challenge 2021 training data "
    "(https://physionet.org/content/challenge-2021/1.0.3/) and build it with\n"
    "  python -m clef_jax.build physionet_challenge --config {config} --manual_dir "
    "~/challenge-2021 --data_dir {data_dir}"
  ),
}


class ConfigError(ValueError):
  """A misconfiguration the user can fix; `main.py` prints it without a traceback."""


class TrainingError(RuntimeError):
  """The run cannot continue (e.g. a non-finite loss); the last good checkpoint is kept."""


class Preempted(Exception):
  """SIGTERM or SIGINT (or a multi-host preemption notice) arrived; a checkpoint was saved.

  Attributes:
    signum: the signal that stopped the run (SIGTERM for a multi-host preemption notice); the
      CLI exits with 128 + signum, as a shell reports a process that signal ended.
  """

  def __init__(self, message: str, signum: int = signal.SIGTERM):
    super().__init__(message)
    self.signum = int(signum)


# ------------------------------------------------------------------------------------------------
# Checks of the numbers a run is made of (before anything is created or compiled).
# ------------------------------------------------------------------------------------------------
# `scipy.signal.filtfilt`'s default padding (3 * 11 taps) needs more samples than it pads.
FILTER_MIN_SAMPLES = 34

# field -> (smallest allowed value, what it means); each is checked when present in the config.
_AT_LEAST = {
  "total_steps": (0, "0 = num_epochs over the train split, else the number of steps"),
  "input.batch_size": (1, "pairs per step"),
  "input.num_workers": (0, "grain worker processes; 0 = in this process"),
  "input.read_threads": (1, "record-reading threads"),
  "ckpt.save_interval_steps": (1, "steps between checkpoints"),
  "ckpt.max_to_keep": (0, "checkpoints kept; 0 = all"),
  "log.every_steps": (1, "steps between metric lines"),
  "mesh.num_devices": (0, "0 = all devices"),
  "moco.queue_size": (1, "MoCo negatives"),
  "evals.probe.embed_batch_size": (1, "records per embedding batch"),
}
_POSITIVE = {  # field -> what it means; must be > 0 (and finite).
  "input.target_fs": "sampling rate of the views in Hz",
  "loss.temperature": "softmax temperature",
}
_FRACTIONS = ("input.p_same_lead", "input.p_zero_mask")  # in [0, 1]


def _field(config: ml_collections.ConfigDict, path: str) -> Any:
  node = config
  for key in path.split("."):
    if not hasattr(node, "keys") or key not in node:
      return None
    node = node[key]
  return node


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Checks the run's counts, sizes and rates, so a bad value fails at once in one line.

  Raises:
    ConfigError: naming the field, the value and what is allowed (e.g.
      `input.batch_size=0: must be at least 1 (pairs per step); set --config.input.batch_size`).
  """

  def fail(path, value, rule):
    raise ConfigError(f"{path}={value!r}: {rule}; set --config.{path}=...")

  for path, (least, meaning) in _AT_LEAST.items():
    value = _field(config, path)
    if value is not None and (isinstance(value, bool) or value < least):
      fail(path, value, f"must be an integer of at least {least} ({meaning})")
  for path, meaning in _POSITIVE.items():
    value = _field(config, path)
    if value is not None and not (value > 0 and value < float("inf")):
      fail(path, value, f"must be a positive number ({meaning})")
  for path in _FRACTIONS:
    value = _field(config, path)
    if value is not None and not 0 <= value <= 1:
      fail(path, value, "must be a probability in [0, 1]")
  if not config.total_steps and config.num_epochs < 1:
    fail(
      "num_epochs",
      config.num_epochs,
      "must be at least 1 when total_steps=0 (or set --config.total_steps=N > 0)",
    )
  least = FILTER_MIN_SAMPLES if _field(config, "input.bandpass") else 1
  window = _field(config, "input.window")
  if window is not None and window < least:
    fail(
      "input.window",
      window,
      f"must be at least {least} samples per view"
      + (" (the bandpass filter's padding)" if least > 1 else ""),
    )


# ------------------------------------------------------------------------------------------------
# The training dataset.
# ------------------------------------------------------------------------------------------------
def build_demo_archive(data_dir: pathlib.Path, build_kwargs: dict[str, Any]) -> pathlib.Path:
  """Builds the synthetic archive into `data_dir` (if absent) and returns its version directory.

  The build runs in this process through `build.build` with its console output (TFDS prints a
  progress bar per split) in `data_dir/build.log`; only process 0 builds, the others wait for it
  at a barrier and then find the finished build.
  """
  from clef_jax import (
    build,  # Lazy: imports TFDS.
    build_report,
  )

  data_dir.mkdir(parents=True, exist_ok=True)
  report_path = None
  if jax.process_index() == 0:
    start = time.monotonic()
    log_path = data_dir / "build.log"
    try:
      with (
        open(log_path, "w") as log_file,
        contextlib.redirect_stdout(log_file),
        contextlib.redirect_stderr(log_file),
      ):
        report_path = build.build(DEMO_DATASET, data_dir=data_dir, builder_kwargs=build_kwargs)
    except Exception as e:  # A failed build is a config problem here (options, disk).
      raise ConfigError(
        f"Building the demo archive failed ({type(e).__name__}: "
        f"{str(e).splitlines()[0] if str(e) else ''}); see {log_path}."
      ) from None
    summary = (
      build_report.summarize(json.loads(report_path.read_text())).splitlines()[0]
      if report_path.is_file()
      else DEMO_DATASET
    )
    _log("data: %s (%.0f s)", summary, time.monotonic() - start)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices("demo archive built")
  if report_path is None:  # The other processes: the finished build.
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
      report_path = build.build(DEMO_DATASET, data_dir=data_dir, builder_kwargs=build_kwargs)
  return report_path.parent


def resolve_train_dataset(cfg: ml_collections.ConfigDict, workdir: pathlib.Path) -> pathlib.Path:
  """`config.input` -> the built dataset's version directory, building the demo archive."""
  data_dir = pathlib.Path(cfg.data_dir.format(workdir=workdir)).expanduser().absolute()
  if cfg.auto_build:
    if cfg.dataset.split("/")[0] != DEMO_DATASET:
      raise ConfigError(
        f"input.auto_build only builds {DEMO_DATASET}, not {cfg.dataset}; build "
        "real archives with `python -m clef_jax.build` (docs/datasets.md)."
      )
    return build_demo_archive(data_dir, dict(cfg.build))
  name, _, config_name = cfg.dataset.partition("/")
  hint = BUILD_HINTS.get(
    name, "Build it with `python -m clef_jax.build {name} ...` (docs/datasets.md)."
  ).format(config=config_name or "default", data_dir=data_dir, name=name)
  try:
    return built.resolve_dataset(
      cfg.dataset,
      data_dir,
      hint=(
        f"\n{hint}\nor point --config.input.data_dir at an existing build. To try the whole "
        "pipeline on synthetic data instead (no download):\n"
        "  python -m clef_jax.main --config=configs/medium.py:demo --workdir=/tmp/clef_demo"
      ),
    )
  except FileNotFoundError as e:
    raise ConfigError(str(e)) from None


def augment_config(input_cfg: Any, noise_mat: str | None) -> input_pipeline.AugmentConfig:
  """`config.input` -> the view augmentation (docs/method.md §D)."""
  return input_pipeline.AugmentConfig(
    p_same_lead=input_cfg["p_same_lead"],
    bandpass=input_cfg["bandpass"],
    noise=input_cfg["noise"],
    noise_mat=noise_mat or None,
    noise_rms=input_cfg["noise_rms"],
    p_zero_mask=input_cfg["p_zero_mask"],
    mask_span=tuple(input_cfg["mask_span"]),
    zscore=input_cfg["zscore"],
    faithful=input_cfg["faithful"],
    target_fs=float(input_cfg["target_fs"]),
  )


def loss_kwargs(method: str, loss: Any) -> dict[str, Any]:
  """`config.loss` -> the method's loss keyword arguments (every `clef_loss` switch for CLEF)."""
  if method == "clef":
    return dict(loss)
  if method in ("simclr", "moco"):
    return {"temperature": loss["temperature"]}
  return {}


# ------------------------------------------------------------------------------------------------
# The optimiser from its config section (also used by the export CLI).
# ------------------------------------------------------------------------------------------------
def create_optimizer(optim_cfg: Any, steps_per_epoch: int):
  """`config.optim` -> `(tx, lr_fn)` (`optim.make_optimizer`)."""
  return optim.make_optimizer(
    learning_rate=optim_cfg["learning_rate"],
    weight_decay=optim_cfg["weight_decay"],
    b1=optim_cfg["b1"],
    b2=optim_cfg["b2"],
    eps=optim_cfg["eps"],
    schedule=optim_cfg["schedule"],
    interval=optim_cfg["interval"],
    steps_per_epoch=steps_per_epoch,
    t0=optim_cfg["t0"],
    t_mult=optim_cfg["t_mult"],
    eta_min=optim_cfg["eta_min"],
    grad_clip_norm=optim_cfg["grad_clip_norm"] or None,
  )


def state_kwargs(config: Any, model, tx) -> dict[str, Any]:
  """`train.create_train_state` keyword arguments (everything but the rng and weights)."""
  return dict(
    model=model,
    tx=tx,
    method=config["method"],
    init_shape=(1, config["input"]["window"], 1),
    moco_queue_size=config["moco"]["queue_size"],
  )


def make_train_iterator(
  config: ml_collections.ConfigDict, train_source: Any, mesh: jax.sharding.Mesh
):
  """`config.input` -> this process's grain iterator of globally sharded training batches."""
  from clef_jax import sharding as sharding_lib

  noise_mat = config.input.noise_mat and os.path.expanduser(config.input.noise_mat)
  return input_pipeline.make_pretrain_iterator(
    data_source=train_source,
    global_batch_size=config.input.batch_size,
    seed=config.seed,
    process_index=jax.process_index(),
    process_count=jax.process_count(),
    num_workers=config.input.num_workers,
    augment=augment_config(config.input, noise_mat),
    window=config.input.window,
    lead_policy=config.input.lead,
    sharding=sharding_lib.batch_sharding(mesh),
    read_threads=config.input.read_threads,
  )


def make_step(
  config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh, steps_per_epoch: int
) -> tuple[Any, Any, Any]:
  """`config` -> `(model, tx, step_fn)`: the backbone, the optimiser and the pure train step.

  Raises:
    ConfigError: a model, optimiser or method setting that cannot be built.
  """
  from clef_jax import train

  try:
    model = models.from_config(config.model)
    tx, lr_fn = create_optimizer(config.optim, steps_per_epoch)
    if config.method == "moco" and config.moco.queue_size % config.input.batch_size:
      raise ValueError(
        f"moco.queue_size={config.moco.queue_size} must be a multiple of "
        f"input.batch_size={config.input.batch_size}."
      )
    step_fn = train.make_train_step(
      model,
      tx,
      lr_fn,
      method=config.method,
      loss_kwargs=loss_kwargs(config.method, config.loss),
      byol_tau=config.byol.tau,
      moco_momentum=config.moco.momentum,
      mesh=mesh,
      risk_spearman_pairs=config.log.risk_spearman_pairs,
    )
  except (ValueError, TypeError) as e:
    raise ConfigError(str(e)) from None
  return model, tx, step_fn


def make_state(
  config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh, model: Any, tx: Any, rng: jax.Array
) -> tuple[Any, Any, Any]:
  """`config` -> `(init_fn, abstract_state, state_sharding)`: the train state, still abstract.

  `init_fn(rng, backbone_params=None)` builds the state; `abstract_state` is its
  `jax.ShapeDtypeStruct` tree (nothing allocated) and `state_sharding` its shardings on `mesh`
  under `config.mesh.strategy`. The trainer and `python -m clef_jax.plan` both build the state
  here, so the plan compiles the trainer's program.
  """
  from clef_jax import sharding as sharding_lib
  from clef_jax import train

  init_fn = functools.partial(train.create_train_state, **state_kwargs(config, model, tx))
  abstract_state = jax.eval_shape(init_fn, rng)
  state_sharding = sharding_lib.state_sharding(
    abstract_state, mesh, strategy=config.mesh.strategy, fsdp_min_size=config.mesh.fsdp_min_size
  )
  return init_fn, abstract_state, state_sharding
