"""Train state, its sharded creation, and the pretraining step for CLEF / SimCLR / BYOL / MoCo.

The step:
  * `TrainState` is a small typed pytree (no apply_fn / tx inside), born sharded:
    `jax.eval_shape(init)` -> `sharding.state_sharding(...)` -> `jax.jit(init, out_shardings=...)`.
  * `train_step(state, batch, rng) -> (state, metrics)` is pure, built once by `make_train_step`,
    and jitted once with `donate_argnums=0` and explicit in/out shardings over a `data` mesh.
  * Losses are written on *global* arrays: with the batch split over 8 devices the loss, the
    gradients and the BatchNorm statistics are those of the whole batch (XLA adds the gathers).

Batch layout (docs/method.md §C.1): `batch["views"]` is `(B, 2, L, C)` (or `(B, 2, L)`); the embeddings are
stacked as `z = [view 1 of all B subjects; view 2 of all B subjects]`, shape `(2B, D)`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from clef_jax import losses, methods, step_metrics
from clef_jax import sharding as sharding_lib
from clef_jax.methods import METHODS
from clef_jax.models import init as models_init

Array = jax.Array
PyTree = Any
Metrics = dict[str, Array]


@flax.struct.dataclass
class TrainState:
  """Everything a pretraining step reads and writes; Orbax saves it as-is.

  Attributes:
    step: int32 scalar, number of optimiser updates done.
    params: trainable parameters, `{"backbone": ...}` plus `{"predictor": ...}` for BYOL.
    opt_state: optax state of `params`.
    batch_stats: BYOL predictor BatchNorm running stats (`{"bn": {"mean", "var"}}`), else None.
    ema_params: BYOL target / MoCo key encoder: an EMA copy of `params["backbone"]`, else None.
    queue: MoCo negative keys `(D, K)`, else None.
    queue_ptr: MoCo int32 scalar write position into `queue`, else None.
  """

  step: Array
  params: PyTree
  opt_state: PyTree
  batch_stats: PyTree = None
  ema_params: PyTree = None
  queue: Array | None = None
  queue_ptr: Array | None = None


def _check_method(method: str) -> None:
  if method not in METHODS:
    raise ValueError(f"Unknown pretraining method {method!r}; choose one of {METHODS}.")


# ------------------------------------------------------------------------------------------------
# State creation.
# ------------------------------------------------------------------------------------------------
def create_train_state(
  rng: Array,
  *,
  model: nn.Module,
  tx: optax.GradientTransformation,
  method: str,
  init_shape: tuple[int, ...],
  backbone_params: PyTree | None = None,
  predictor: nn.Module | None = None,
  moco_queue_size: int = methods.MOCO_QUEUE_SIZE,
) -> TrainState:
  """Initialises the train state; pure, so usable under `jax.eval_shape` and `jax.jit`.

  Args:
    rng: PRNG key.
    model: backbone module, `(B, L, C) -> ((B, D), aux)`.
    tx: optimiser for `params`.
    method: "clef" | "simclr" | "byol" | "moco".
    init_shape: dummy input shape `(B, L, C)` for parameter init (any B and L work: Net1D's
      parameters do not depend on them).
    backbone_params: start from these backbone weights (e.g. `config.init_from`) instead of a
      random init; the rest of the state (optimiser, predictor, queue) is still fresh.
    predictor: BYOL predictor module; None -> `methods.BYOLPredictor()`.
    moco_queue_size: MoCo K.

  Returns:
    `TrainState` at step 0. BYOL's target and MoCo's key encoder start as copies of the
    backbone (the reference deep-copies it).
  """
  _check_method(method)
  rng_model, rng_pred, rng_queue = jax.random.split(rng, 3)
  x = jnp.zeros(init_shape, jnp.float32)
  if backbone_params is None:
    # One fused random draw: per-parameter draws (`model.init`) take XLA:CPU ~10x longer to
    # compile (models/init.py).
    backbone_params = models_init.init_params(model, rng_model, init_shape)
  # Shape-only forward pass for D.
  emb = jax.eval_shape(lambda p: model.apply({"params": p}, x)[0], backbone_params)
  params = {"backbone": backbone_params}
  batch_stats = ema_params = queue = queue_ptr = None
  if method in ("byol", "moco"):
    # A real copy: the state is donated, and two leaves must never share one buffer.
    ema_params = jax.tree.map(jnp.copy, params["backbone"])
  if method == "byol":
    predictor = predictor or methods.BYOLPredictor()
    pred_vars = predictor.init(rng_pred, jnp.zeros(emb.shape, jnp.float32), train=False)
    params["predictor"] = pred_vars["params"]
    batch_stats = pred_vars["batch_stats"]
  if method == "moco":
    queue = methods.init_queue(rng_queue, emb.shape[-1], moco_queue_size)  # (D, K)
    queue_ptr = jnp.zeros((), jnp.int32)
  return TrainState(
    step=jnp.zeros((), jnp.int32),
    params=params,
    opt_state=tx.init(params),
    batch_stats=batch_stats,
    ema_params=ema_params,
    queue=queue,
    queue_ptr=queue_ptr,
  )


def create_sharded_train_state(
  rng: Array,
  *,
  mesh: jax.sharding.Mesh,
  strategy: str = "replicate",
  fsdp_min_size: int = 2**18,
  **kwargs: Any,
) -> tuple[TrainState, PyTree]:
  """Creates the state directly in its sharded layout.

  Args:
    rng: PRNG key.
    mesh: mesh with a `data` axis.
    strategy: "replicate" | "fsdp" (see `sharding.state_sharding`).
    fsdp_min_size: smallest leaf `fsdp` shards.
    **kwargs: `create_train_state` keyword arguments (model, tx, method, init_shape, ...).

  Returns:
    `(state, state_sharding)`; pass `state_sharding` to `jit_train_step`.
  """
  # Given backbone weights travel as a jit argument, not as constants baked into the program.
  backbone_params = kwargs.pop("backbone_params", None)

  def init(rng, backbone_params):
    return create_train_state(rng, backbone_params=backbone_params, **kwargs)

  abstract_state = jax.eval_shape(init, rng, backbone_params)
  state_sharding = sharding_lib.state_sharding(
    abstract_state, mesh, strategy=strategy, fsdp_min_size=fsdp_min_size
  )
  state = jax.jit(init, out_shardings=state_sharding)(rng, backbone_params)
  return state, state_sharding


def backbone_params(state: TrainState) -> PyTree:
  """The online backbone's parameters (what checkpoints export and evaluation uses)."""
  return state.params["backbone"]


# ------------------------------------------------------------------------------------------------
# The train step.
# ------------------------------------------------------------------------------------------------
def _split_views(views: Array) -> tuple[Array, Array]:
  """`(B, 2, L[, C])` -> two `(B, L, C)` arrays (a single-lead batch gets C = 1)."""
  if views.ndim == 3:
    views = views[..., None]
  if views.ndim != 4 or views.shape[1] != 2:
    raise ValueError(f"batch['views'] must be (B, 2, L) or (B, 2, L, C); got {views.shape}.")
  return views[:, 0], views[:, 1]


def make_train_step(
  model: nn.Module,
  tx: optax.GradientTransformation,
  lr_fn: Callable[[Array], Array],
  *,
  method: str,
  loss_kwargs: dict[str, Any] | None = None,
  predictor: nn.Module | None = None,
  byol_tau: float = methods.BYOL_TAU,
  moco_momentum: float = methods.MOCO_MOMENTUM,
  moco_double_enqueue: bool = True,
  mesh: jax.sharding.Mesh | None = None,
  risk_spearman_pairs: int = step_metrics.RISK_SPEARMAN_PAIRS,
) -> Callable[[TrainState, dict[str, Array], Array], tuple[TrainState, Metrics]]:
  """Builds `train_step(state, batch, rng) -> (state, metrics)` for one pretraining method.

  Args:
    model: backbone module.
    tx: optimiser (the one `state.opt_state` was made with).
    lr_fn: `lr_fn(step)`, only for the `lr` metric (the schedule itself lives inside `tx`).
    method: "clef" (`losses.clef_loss`), "simclr" (`losses.info_nce`), "byol" or "moco".
    loss_kwargs: keyword arguments of the method's loss: `clef_loss` (temperature, alpha,
      use_mask, ...), `info_nce` / `moco_loss` (temperature); BYOL takes none.
    predictor: BYOL predictor module; None -> `methods.BYOLPredictor()`.
    byol_tau: BYOL target EMA rate (0.996, constant).
    moco_momentum: MoCo key-encoder EMA rate (0.999).
    moco_double_enqueue: True reproduces the reference's two enqueues per step
      (see `methods.moco_update_queue`); False enqueues once.
    mesh: the state's mesh. When given, the weights are constrained to be replicated for the
      forward/backward pass (a no-op under `replicate`; the ZeRO-3 all-gather under `fsdp`:
      storage and the optimiser update stay sharded, compute is data-parallel). Needed for
      `fsdp`: XLA's SPMD partitioner aborts when it tries to split Net1D's grouped convolutions
      along a sharded feature axis.
    risk_spearman_pairs: most subject pairs the `risk_spearman` monitor ranks per step
      (`step_metrics.embedding_metrics`); <= 0 ranks all B (B - 1) / 2.

  Returns:
    The pure step function. `batch` holds `views` `(B, 2, L[, C])`, and `risk`, `rate_meta`
    `(B,)` (NaN allowed; `risk` is required by "clef", optional otherwise).
  """
  _check_method(method)
  loss_kwargs = dict(loss_kwargs or {})
  if method == "byol" and loss_kwargs:
    raise ValueError(f"BYOL's loss takes no keyword arguments; got {sorted(loss_kwargs)}.")
  predictor = predictor or methods.BYOLPredictor()
  temperature = loss_kwargs.get("temperature", 0.07)

  def gather(tree):
    if mesh is None:
      return tree
    return jax.lax.with_sharding_constraint(tree, sharding_lib.replicated(mesh))

  def backbone(params, x, rng):
    # `rng` feeds stochastic layers (none in Net1D today); `z` is the pooled (N, D) embedding.
    params = gather(params)
    z, _ = model.apply({"params": params}, x, train=True, rngs={"dropout": rng})
    return z

  def train_step(
    state: TrainState, batch: dict[str, Array], rng: Array
  ) -> tuple[TrainState, Metrics]:
    rng = jax.random.fold_in(rng, state.step)
    x1, x2 = _split_views(batch["views"])  # (B, L, C) each
    b = x1.shape[0]
    risk, rate_meta = batch.get("risk"), batch.get("rate_meta")
    x = jnp.concatenate([x1, x2], axis=0)  # (2B, L, C), §C.1

    # BYOL / MoCo: the EMA copy is updated from the pre-step online weights *before* it
    # produces targets / keys (docs/method.md §C.9). Targets carry no gradient.
    ema_params, targets = state.ema_params, None
    if method == "byol":
      ema_params = methods.ema_update(ema_params, state.params["backbone"], byol_tau)
      targets = jax.lax.stop_gradient(backbone(ema_params, x, rng))  # (2B, D)
    elif method == "moco":
      if state.queue.shape[1] % b:
        raise ValueError(
          f"MoCo needs queue size K % batch size B == 0; got K = {state.queue.shape[1]}, B = {b}."
        )
      ema_params = methods.ema_update(ema_params, state.params["backbone"], moco_momentum)
      targets = jax.lax.stop_gradient(backbone(ema_params, x2, rng))  # keys, (B, D)

    def loss_fn(params):
      batch_stats, terms = state.batch_stats, {}
      if method == "clef":
        if risk is None:
          raise ValueError("method 'clef' needs batch['risk'].")
        z = backbone(params["backbone"], x, rng)  # (2B, D)
        loss, terms = losses.clef_loss(z, risk, rate_meta=rate_meta, **loss_kwargs)
        z1, z2 = z[:b], z[b:]
      elif method == "simclr":
        z = backbone(params["backbone"], x, rng)
        loss = losses.info_nce(z, **loss_kwargs)
        z1, z2 = z[:b], z[b:]
      elif method == "byol":
        z = backbone(params["backbone"], x, rng)
        z1, z2 = z[:b], z[b:]
        # Two predictor calls as in the reference: BN statistics per view (over B rows, the
        # global batch), and the running averages are updated twice per step.
        pred_params = gather(params["predictor"])
        p1, upd = predictor.apply(
          {"params": pred_params, "batch_stats": batch_stats},
          z1,
          train=True,
          mutable=["batch_stats"],
        )
        p2, upd = predictor.apply(
          {"params": pred_params, **upd}, z2, train=True, mutable=["batch_stats"]
        )
        batch_stats = upd["batch_stats"]
        loss = losses.byol_loss(p1, targets[b:], p2, targets[:b])
      else:  # moco: view 1 -> query encoder, view 2 -> key encoder; not symmetrised.
        z1, z2 = backbone(params["backbone"], x1, rng), targets
        loss = losses.moco_loss(z1, z2, state.queue, **loss_kwargs)
      return loss, (terms, batch_stats, z1, z2)

    (loss, (terms, batch_stats, z1, z2)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params
    )
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)

    queue, queue_ptr = state.queue, state.queue_ptr
    if method == "moco":
      queue, queue_ptr = methods.moco_update_queue(
        queue, queue_ptr, z2, double_enqueue=moco_double_enqueue
      )

    metrics = {
      "loss": loss,
      **terms,
      "lr": lr_fn(state.step),
      "l2_grads": optax.tree.norm(grads),
      "l2_params": optax.tree.norm(params),
      "l2_updates": optax.tree.norm(updates),
    }
    if method != "byol":
      metrics["temperature"] = jnp.asarray(temperature)
    metrics.update(
      step_metrics.embedding_metrics(
        jax.lax.stop_gradient(z1), jax.lax.stop_gradient(z2), risk, risk_pairs=risk_spearman_pairs
      )
    )
    metrics = {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}
    new_state = state.replace(
      step=state.step + 1,
      params=params,
      opt_state=opt_state,
      batch_stats=batch_stats,
      ema_params=ema_params,
      queue=queue,
      queue_ptr=queue_ptr,
    )
    return new_state, metrics

  return train_step


def jit_train_step(
  train_step: Callable[..., Any], *, mesh: jax.sharding.Mesh, state_sharding: PyTree
) -> Callable[..., Any]:
  """Jits `train_step` once: state donated, batch split over `data`, rng and metrics replicated.

  Args:
    train_step: from `make_train_step`.
    mesh: the mesh the state lives on.
    state_sharding: from `create_sharded_train_state` / `sharding.state_sharding`.

  Returns:
    The compiled-on-first-call step. The caller must not reuse a state it passed in (donated).
  """
  replicated = sharding_lib.replicated(mesh)
  return jax.jit(
    train_step,
    in_shardings=(state_sharding, sharding_lib.batch_sharding(mesh), replicated),
    out_shardings=(state_sharding, replicated),
    donate_argnums=0,
  )
