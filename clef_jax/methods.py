"""Method-specific pieces of the BYOL and MoCo baselines (docs/method.md §C.9).

CLEF and SimCLR need nothing beyond the backbone and `clef_jax.losses`. BYOL adds a predictor MLP
and an EMA target network; MoCo adds a momentum key encoder and a queue of negative keys. All
pieces are pure functions (or a Linen module) so `train.train_step` stays one readable function.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from clef_jax.losses import l2_normalize
from clef_jax.models.layers import Dense

Array = jax.Array
PyTree = Any

METHODS = ("clef", "simclr", "byol", "moco")

BYOL_TAU = 0.996  # Target EMA rate, constant (no cosine schedule in the reference).
MOCO_MOMENTUM = 0.999  # Key-encoder EMA rate.
MOCO_QUEUE_SIZE = 65536  # K; must be a multiple of the global batch size B.


class BYOLPredictor(nn.Module):
  """BYOL predictor: Linear(D, D/2) -> BatchNorm1d -> ReLU -> Linear(D/2, D).

  Linear layers use PyTorch's default init (`models.layers.Dense`). BatchNorm matches torch
  defaults: eps 1e-5 and torch momentum 0.1, i.e. Flax `momentum=0.9` (Flax keeps 0.9 of the old
  running average). Under `jax.jit` on a sharded batch the batch statistics are global-batch
  statistics; no `axis_name` is needed.

  Known difference: torch updates `running_var` with the *unbiased* batch variance, Flax with the
  biased one. Only the running averages differ (training normalises with the batch statistics in
  both), and the predictor is discarded after pretraining.

  Attributes:
    hidden: hidden width; None -> D // 2 (D = input width, the backbone embedding size).
    bn_momentum: Flax BatchNorm momentum (1 - torch momentum).
    bn_epsilon: BatchNorm epsilon.
  """

  hidden: int | None = None
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-5

  @nn.compact
  def __call__(self, x: Array, *, train: bool) -> Array:
    d = x.shape[-1]
    x = x.astype(jnp.float32)
    h = Dense(self.hidden or d // 2, name="fc1")(x)  # (B, D/2)
    h = nn.BatchNorm(
      use_running_average=not train, momentum=self.bn_momentum, epsilon=self.bn_epsilon, name="bn"
    )(h)
    return Dense(d, name="fc2")(nn.relu(h))  # (B, D)


def ema_update(target: PyTree, online: PyTree, decay: float) -> PyTree:
  """`decay * target + (1 - decay) * online`, leaf by leaf (BYOL target / MoCo key encoder)."""
  return jax.tree.map(lambda t, o: decay * t + (1.0 - decay) * o, target, online)


def init_queue(rng: Array, dim: int, size: int) -> Array:
  """MoCo queue `(D, K)`: standard normal, each column L2-normalised (`F.normalize(dim=0)`)."""
  return l2_normalize(jax.random.normal(rng, (dim, size), jnp.float32), axis=0)


def enqueue(queue: Array, ptr: Array, keys: Array) -> tuple[Array, Array]:
  """Writes `keys` `(B, D)` into columns `[ptr, ptr + B)` of `queue` `(D, K)`; advances `ptr`.

  Requires K % B == 0 (checked by the caller at trace time): `ptr` is then always a multiple of B
  and the slice never wraps, so `dynamic_update_slice` (which would clamp) is exact.
  """
  b = keys.shape[0]
  queue = jax.lax.dynamic_update_slice(queue, keys.T.astype(queue.dtype), (0, ptr))
  return queue, (ptr + b) % queue.shape[1]


def moco_update_queue(
  queue: Array, ptr: Array, keys: Array, *, double_enqueue: bool = True
) -> tuple[Array, Array]:
  """The reference's queue update for one step.

  The official `training_step` calls `_dequeue_and_enqueue` twice (docs/method.md §C.9): once inside
  `_moco_loss` with the *L2-normalised* keys (`k` is rebound to `F.normalize(k)` there), then
  again after the loss with the caller's *raw, unnormalised* keys. So each step writes 2B
  columns: normalised keys at `[ptr, ptr + B)`, raw keys at `[ptr + B, ptr + 2B)`.

  Args:
    queue: `(D, K)` negatives.
    ptr: int32 scalar write position.
    keys: `(B, D)` raw key-encoder outputs.
    double_enqueue: True reproduces the reference; False enqueues the normalised keys once
      (standard MoCo).

  Returns:
    `(queue, ptr)` after the update.
  """
  queue, ptr = enqueue(queue, ptr, l2_normalize(keys))
  if double_enqueue:
    queue, ptr = enqueue(queue, ptr, keys.astype(jnp.float32))
  return queue, ptr
