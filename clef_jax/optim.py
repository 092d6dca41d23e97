"""Optimiser and learning-rate schedule of the CLEF pretraining (docs/method.md §E.1).

The reference trains with `torch.optim.AdamW(lr=1e-4, weight_decay=5e-4, betas=(0.9, 0.999))`
on all parameters (biases included) and `CosineAnnealingWarmRestarts(T_0=10, T_mult=2,
eta_min=1e-6)` stepped once per epoch by Lightning (`"interval": "epoch"`).

`optax.adamw` matches torch's AdamW update exactly, with decoupled weight decay scaled by the
*scheduled* learning rate in both libraries:

    torch:  p <- p * (1 - lr_t * wd);  p <- p - lr_t * m_hat / (sqrt(v_hat) + eps)
    optax:  u  = -lr_t * (m_hat / (sqrt(v_hat) + eps) + wd * p)

Both use the parameters *before* the step for the decay term, so the results agree to rounding
(`tests/optim_test.py` checks this against torch with a changing lr).

The schedule is a pure function of the optimiser step count, so it needs `steps_per_epoch`:
  * `interval="epoch"` (the reference): the lr is constant within an epoch and equals
    `lr(e)` for epoch `e = step // steps_per_epoch`.
  * `interval="step"`: the continuous variant, `lr(step / steps_per_epoch)`, i.e. what torch's
    docs get with `scheduler.step(epoch + i / iters)` -- except that the torch recipe calls it
    *after* `optimizer.step()`, so its lr lags one iteration; ours does not.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

Schedule = Callable[[jax.Array], jax.Array]

# Cycles precomputed for the warm-restart schedule. With T_mult >= 2 cycle k starts at epoch
# t0 * (t_mult**k - 1) / (t_mult - 1), so 62 cycles reach far beyond any real run.
_MAX_CYCLES = 62


def cosine_warm_restarts(
  epoch: jax.Array,
  *,
  base_lr: float,
  t0: int = 10,
  t_mult: int = 2,
  eta_min: float = 1e-6,
  epoch_frac: jax.Array | float = 0.0,
) -> jax.Array:
  """`torch.optim.lr_scheduler.CosineAnnealingWarmRestarts` as a pure function of the epoch.

  lr(e) = eta_min + (base_lr - eta_min) * (1 + cos(pi * T_cur / T_i)) / 2, where cycle n
  (n = 0, 1, ...) has length T_i = t0 * t_mult**n and starts at epoch
  t0 * (t_mult**n - 1) / (t_mult - 1) (restarts at 10, 30, 70, 150, ... for t0=10, t_mult=2).

  The cycle index is found with integer arithmetic on the whole epoch, so restarts fall exactly
  on their epoch (torch's explicit-epoch path uses a floating-point log instead).

  Args:
    epoch: integer epoch index (any integer dtype or an integral float), scalar.
    base_lr: the optimiser's initial learning rate.
    t0: length of the first cycle in epochs (torch `T_0`), >= 1.
    t_mult: cycle-length multiplier (torch `T_mult`), integer >= 1.
    eta_min: the floor of the schedule.
    epoch_frac: fraction of the epoch elapsed, in [0, 1), for the per-step variant.

  Returns:
    The learning rate, float32 scalar.
  """
  if t0 < 1 or t_mult < 1 or int(t_mult) != t_mult:
    raise ValueError(f"Need integer t0 >= 1 and t_mult >= 1; got t0={t0}, t_mult={t_mult}.")
  epoch = jnp.asarray(epoch).astype(jnp.int32)
  if t_mult == 1:
    t_cur = (epoch % t0).astype(jnp.float32)
    t_i = jnp.float32(t0)
  else:
    # starts[n] = first epoch of cycle n; float64 in numpy so huge values stay ordered.
    starts = np.array(
      [t0 * (t_mult**k - 1) // (t_mult - 1) for k in range(_MAX_CYCLES)], np.float64
    )
    lengths = np.array([t0 * float(t_mult) ** k for k in range(_MAX_CYCLES)], np.float64)
    # Cycle index = number of restarts at or before `epoch` (starts[0] = 0 always counts).
    n = jnp.sum(epoch.astype(jnp.float32)[None] >= starts[1:].astype(np.float32))
    t_cur = epoch.astype(jnp.float32) - jnp.asarray(starts, jnp.float32)[n]
    t_i = jnp.asarray(lengths, jnp.float32)[n]
  t_cur = t_cur + jnp.asarray(epoch_frac, jnp.float32)
  cos = jnp.cos(jnp.pi * t_cur / t_i)
  return (eta_min + (base_lr - eta_min) * (1.0 + cos) / 2.0).astype(jnp.float32)


def make_lr_schedule(
  *,
  learning_rate: float,
  schedule: str = "cosine_restarts",
  interval: str = "epoch",
  steps_per_epoch: int | None = None,
  t0: int = 10,
  t_mult: int = 2,
  eta_min: float = 1e-6,
) -> Schedule:
  """Returns `lr_fn(step) -> lr`, the learning rate used by optimiser update number `step`.

  Args:
    learning_rate: base (peak) learning rate.
    schedule: "cosine_restarts" (the reference) or "constant".
    interval: "epoch" (lr constant within an epoch, the reference) or "step" (fractional epoch).
    steps_per_epoch: optimiser steps per epoch; required by "cosine_restarts".
    t0, t_mult, eta_min: `CosineAnnealingWarmRestarts` arguments.
  """
  if schedule == "constant":
    return lambda step: jnp.full((), learning_rate, jnp.float32)
  if schedule != "cosine_restarts":
    raise ValueError(f"Unknown schedule {schedule!r}; choose 'cosine_restarts' or 'constant'.")
  if interval not in ("epoch", "step"):
    raise ValueError(f"Unknown interval {interval!r}; choose 'epoch' or 'step'.")
  if not steps_per_epoch or steps_per_epoch < 1:
    raise ValueError(f"cosine_restarts needs steps_per_epoch >= 1; got {steps_per_epoch}.")

  def lr_fn(step: jax.Array) -> jax.Array:
    step = jnp.asarray(step, jnp.int32)
    epoch = step // steps_per_epoch
    # The fraction is computed from the integer remainder so long runs keep full precision.
    frac = (
      (step % steps_per_epoch).astype(jnp.float32) / steps_per_epoch if interval == "step" else 0.0
    )
    return cosine_warm_restarts(
      epoch, base_lr=learning_rate, t0=t0, t_mult=t_mult, eta_min=eta_min, epoch_frac=frac
    )

  return lr_fn


def make_optimizer(
  *,
  learning_rate: float = 1e-4,
  weight_decay: float = 5e-4,
  b1: float = 0.9,
  b2: float = 0.999,
  eps: float = 1e-8,
  schedule: str = "cosine_restarts",
  interval: str = "epoch",
  steps_per_epoch: int | None = None,
  t0: int = 10,
  t_mult: int = 2,
  eta_min: float = 1e-6,
  grad_clip_norm: float | None = None,
) -> tuple[optax.GradientTransformation, Schedule]:
  """AdamW with torch semantics and the warm-restart cosine schedule (docs/method.md §E.1).

  Weight decay applies to every parameter, biases included, as in the reference (it passes
  `self.parameters()` to AdamW with no parameter groups).

  Args:
    learning_rate: base lr (1e-4).
    weight_decay: decoupled weight decay (5e-4); multiplied by the scheduled lr, as torch does.
    b1, b2, eps: Adam moments and epsilon (0.9, 0.999, 1e-8).
    schedule: "cosine_restarts" or "constant".
    interval: "epoch" or "step"; see the module docstring.
    steps_per_epoch: optimiser steps per epoch (needed to map steps to epochs).
    t0, t_mult, eta_min: `CosineAnnealingWarmRestarts` arguments (10, 2, 1e-6).
    grad_clip_norm: optional global-norm clipping before Adam. The reference does not clip
      (None).

  Returns:
    `(tx, lr_fn)`: the optax transformation and `lr_fn(step)`, the lr of update number `step`
    (optax calls the schedule with its own update count, which starts at 0 like
    `TrainState.step`).
  """
  lr_fn = make_lr_schedule(
    learning_rate=learning_rate,
    schedule=schedule,
    interval=interval,
    steps_per_epoch=steps_per_epoch,
    t0=t0,
    t_mult=t_mult,
    eta_min=eta_min,
  )
  tx = optax.adamw(learning_rate=lr_fn, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay)
  if grad_clip_norm is not None:
    tx = optax.chain(optax.clip_by_global_norm(grad_clip_norm), tx)
  return tx, lr_fn
