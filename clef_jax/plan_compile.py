"""The trainer's step for `python -m clef_jax.plan`, built and compiled without allocating.

`compile_step` builds exactly the step `python -m clef_jax.main` runs (`train_setup.make_step`
and `train_setup.make_state`) on a mesh of the devices `topology_devices` names (the local ones,
or a TPU topology description's, deviceless) and compiles it with `jax.ShapeDtypeStruct`
arguments only.
"""

from __future__ import annotations

import importlib.util
import time
from typing import Any, NamedTuple

STEPS_PER_EPOCH = 1000  # Only the learning-rate schedule's constants depend on it.
INSTALL_HINT = (
  "compiling for a TPU topology needs libtpu: pip install '.[tpu]' in the clef_jax "
  "checkout (jax[tpu] and libtpu at the tested versions); one libtpu process at a "
  "time"
)


class PlanError(ValueError):
  """A flag or environment problem the user can fix (printed as one line, exit 2)."""


def topology_devices(topology: str) -> tuple[list[Any], str]:
  """`"local"` -> local devices; `"v5p:2x2x1"` -> that TPU slice's (deviceless) devices."""
  import jax

  if topology == "local":
    return list(jax.devices()), jax.default_backend()
  from clef_jax import chips

  try:
    chips.chip_for_topology(topology)
  except KeyError as e:
    raise PlanError(f"--topology: {e.args[0]}") from None
  if importlib.util.find_spec("libtpu") is None:
    raise PlanError(INSTALL_HINT)
  from jax.experimental import topologies

  try:
    desc = topologies.get_topology_desc(platform="tpu", topology_name=topology)
  except Exception as e:  # libtpu reports bad names and lock contention as runtime errors.
    raise PlanError(f"--topology {topology}: {str(e).splitlines()[0][:300]}") from None
  return list(desc.devices), "tpu"


def abstract_inputs(parts, mesh, config, global_batch: int):
  """The step's arguments as sharded `ShapeDtypeStruct`s: state, batch, rng."""
  import jax
  import jax.numpy as jnp

  from clef_jax import sharding as sharding_lib

  state = jax.tree.map(
    lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
    parts.abstract_state,
    parts.state_sharding,
  )
  rows = sharding_lib.batch_sharding(mesh)
  batch = {
    "views": jax.ShapeDtypeStruct(
      (global_batch, 2, config.input.window), jnp.float32, sharding=rows
    ),
    "risk": jax.ShapeDtypeStruct((global_batch,), jnp.float32, sharding=rows),
    "rate_meta": jax.ShapeDtypeStruct((global_batch,), jnp.float32, sharding=rows),
  }
  key = jax.eval_shape(lambda: jax.random.key(0))
  rng = jax.ShapeDtypeStruct(key.shape, key.dtype, sharding=sharding_lib.replicated(mesh))
  return state, batch, rng


class StepParts(NamedTuple):
  """The trainer's step for one mesh, still abstract (`train_setup.make_step` / `make_state`)."""

  model: Any
  abstract_state: Any
  state_sharding: Any
  train_step: Any


def target_conv_impl(config, platform: str) -> str | None:
  """Net1D's grouped-conv formulation in a step compiled for `platform` ("auto" resolves to the
  target's choice, not the host's); None for backbones without one."""
  from clef_jax.models import conv_cpu

  if config.model.name != "net1d":
    return None
  impl = config.model.get("conv_impl", "auto")
  return conv_cpu.auto_conv_impl(platform) if impl == "auto" else impl


def compile_step(config, devices, platform: str, global_batch: int):
  """Builds the trainer's step for `global_batch` on a mesh of `devices` and compiles it.

  Args:
    config: the config (not modified); `config.model.size` may be a custom `Net1DVariant`.
    devices: the mesh's devices (local or a topology description's).
    platform: "tpu" for a topology description; the local backend's name otherwise.
    global_batch: pairs per step.

  Returns:
    `(compiled, parts, compile_seconds)`.
  """
  import jax

  from clef_jax import sharding as sharding_lib
  from clef_jax import train, train_setup

  n = config.mesh.num_devices or len(devices)
  if n > len(devices):
    raise PlanError(f"mesh.num_devices={n} but the topology has {len(devices)} devices")
  if global_batch % n:
    raise PlanError(
      f"batch {global_batch} is not divisible by the {n} devices (try "
      f"{n * max(1, global_batch // n)})"
    )
  config = config.copy_and_resolve_references()
  config.input.batch_size = global_batch
  if (conv_impl := target_conv_impl(config, platform)) is not None:
    config.model.conv_impl = conv_impl  # "auto" would resolve against the host at trace time.
  mesh = sharding_lib.make_mesh(n, devices=devices)
  try:
    model, tx, step_fn = train_setup.make_step(config, mesh, STEPS_PER_EPOCH)
    _, abstract_state, state_sharding = train_setup.make_state(
      config, mesh, model, tx, jax.random.key(config.seed)
    )
  except (train_setup.ConfigError, ValueError, TypeError) as e:
    raise PlanError(f"--config: {e}") from None
  train_step = train.jit_train_step(step_fn, mesh=mesh, state_sharding=state_sharding)
  parts = StepParts(model, abstract_state, state_sharding, train_step)
  start = time.monotonic()
  compiled = train_step.lower(*abstract_inputs(parts, mesh, config, global_batch)).compile()
  return compiled, parts, time.monotonic() - start
