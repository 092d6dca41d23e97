"""Device mesh, batch sharding and train-state shardings.

One mesh axis, `data`, spans every (global) device. The batch is split along its leading axis;
the train state is either replicated (`replicate`, the default: Net1D-large is 0.3 B params and
fits one device) or sharded ZeRO-3 style (`fsdp`): each large leaf is split along one axis over
`data`, and XLA all-gathers it where the step needs it whole.

Everything is plain `jax.jit` with `in_shardings`/`out_shardings`: the loss is written on global
arrays and the compiler inserts the collectives (no `pmap`, no `shard_map`, no `axis_name`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"
STRATEGIES = ("replicate", "fsdp")


def make_mesh(
  num_devices: int | None = None, *, devices: Sequence[jax.Device] | None = None
) -> Mesh:
  """A 1-D mesh with axis `data` over the first `num_devices` global devices (default: all).

  `jax.sharding.Mesh` defaults to `AxisType.Auto` (plain jit-with-shardings semantics), unlike
  `jax.make_mesh`, whose default is Explicit axes.

  Args:
    num_devices: how many devices to use; None -> `len(devices)`.
    devices: devices to draw from; None -> `jax.devices()` (all processes' devices).

  Returns:
    `Mesh` of shape `{data: num_devices}`.
  """
  devices = list(jax.devices() if devices is None else devices)
  n = len(devices) if num_devices is None else num_devices
  if not 1 <= n <= len(devices):
    raise ValueError(f"num_devices must be in [1, {len(devices)}]; got {num_devices}.")
  return Mesh(np.asarray(devices[:n]), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  """Every device holds the whole array (scalars, metrics, the rng key)."""
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over `data`; usable as a prefix for a whole batch dict."""
  return NamedSharding(mesh, P(DATA_AXIS))


def shard_batch(batch: Any, mesh: Mesh) -> Any:
  """Host batch (this process's rows) -> global `jax.Array`s sharded with `batch_sharding`.

  Single process: the local batch is the global batch. Multi-process: each process passes its
  own `B / process_count` rows and the global batch is their concatenation in process order.
  """
  sharding = batch_sharding(mesh)
  return jax.tree.map(
    lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch
  )


def fsdp_spec(shape: tuple[int, ...], num_shards: int, *, min_size: int) -> P:
  """PartitionSpec that splits the largest axis divisible by `num_shards` over `data`.

  Leaves smaller than `min_size` elements, or with no divisible axis, stay replicated. Ties go
  to the last such axis (output channels of conv/dense kernels).
  """
  if num_shards <= 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
    return P()
  best = None
  for axis, dim in enumerate(shape):
    if dim % num_shards == 0 and (best is None or dim >= shape[best]):
      best = axis
  if best is None:
    return P()
  spec = [None] * len(shape)
  spec[best] = DATA_AXIS
  return P(*spec)


def state_sharding(
  abstract_state: Any, mesh: Mesh, *, strategy: str = "replicate", fsdp_min_size: int = 2**18
) -> Any:
  """Shardings for a train state (or any pytree of arrays / `ShapeDtypeStruct`s).

  Args:
    abstract_state: e.g. `jax.eval_shape(create_train_state, rng)`.
    mesh: a mesh with a `data` axis.
    strategy: "replicate" (every leaf on every device) or "fsdp" (leaves with at least
      `fsdp_min_size` elements split along their largest `data`-divisible axis). Optimiser
      moments have their parameter's shape, so they get the same split.
    fsdp_min_size: smallest leaf (in elements) that `fsdp` shards; 2**18 = 1 MiB of float32.

  Returns:
    A pytree of `NamedSharding` with `abstract_state`'s structure.
  """
  if strategy not in STRATEGIES:
    raise ValueError(f"Unknown sharding strategy {strategy!r}; choose one of {STRATEGIES}.")
  num_shards = mesh.shape[DATA_AXIS]

  def leaf_sharding(x):
    if strategy == "replicate":
      return NamedSharding(mesh, P())
    return NamedSharding(mesh, fsdp_spec(tuple(x.shape), num_shards, min_size=fsdp_min_size))

  return jax.tree.map(leaf_sharding, abstract_state)
