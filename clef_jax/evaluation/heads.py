"""The head protocol of downstream evaluation: one linear head on the pooled embedding.

Two ways to fit it on frozen embeddings (`probe`), one with the backbone trained too (`finetune`):

- "adamw" (default; the paper's protocol): AdamW (lr 1e-3, wd 1e-5), shuffled every epoch, early
  stopping on the validation loss, best-validation weights (`fit`, `probe_head`, `finetune`);
- "ridge": closed-form least squares (`fit_ridge`) with the L2 strength picked from `L2_GRID` on
  the validation loss, milliseconds for thousands of records and deterministic.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from clef_jax import embed
from clef_jax.evaluation.models import Backbone
from clef_jax.evaluation.records import Records

HEADS = ("adamw", "ridge")
L2_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0)


def num_outputs(kind: str, num_classes: int) -> int:
  """Head outputs of a task: one per class (multiclass, multilabel), else one."""
  return num_classes if kind in ("multiclass", "multilabel") else 1


def make_loss(kind: str, regression_loss: str = "l1") -> Callable[..., Any]:
  """`loss(logits (B, K), y, mask (B,)) -> scalar`, the mean over `mask`ed rows, jitted: the
  validation loss of every epoch of every model of a task compiles once.

  BCE-with-logits for binary and multi-label (mean over labels), softmax cross-entropy for
  multiclass, L1 (or "mse") on standardised targets for regression.
  """
  import jax
  import jax.numpy as jnp
  import optax

  if regression_loss not in ("l1", "mse"):
    raise ValueError(f"regression_loss must be 'l1' or 'mse'; got {regression_loss!r}.")

  def per_example(logits, y):
    if kind == "binary":
      return optax.sigmoid_binary_cross_entropy(logits[:, 0], y.astype(jnp.float32))
    if kind == "multilabel":
      return optax.sigmoid_binary_cross_entropy(logits, y.astype(jnp.float32)).mean(axis=-1)
    if kind == "multiclass":
      return optax.softmax_cross_entropy_with_integer_labels(logits, y.astype(jnp.int32))
    if kind == "regression":
      err = logits[:, 0] - y.astype(jnp.float32)
      return jnp.abs(err) if regression_loss == "l1" else err**2
    raise ValueError(f"Unknown task kind {kind!r}.")

  @jax.jit
  def loss(logits, y, mask):
    mask = mask.astype(jnp.float32)
    return jnp.sum(per_example(logits.astype(jnp.float32), y) * mask) / jnp.maximum(mask.sum(), 1)

  return loss


def init_head(dim: int, outputs: int, seed: int, *, init: str = "torch") -> dict[str, np.ndarray]:
  """`nn.Linear(dim, outputs)` params: "torch" = PyTorch's default U(+-1/sqrt(dim)) (the
  released code's head), "zeros" = start from the constant prediction (the train mean for
  standardised regression targets, ties for AUROC)."""
  if init == "zeros":
    return {"kernel": np.zeros((dim, outputs), np.float32), "bias": np.zeros(outputs, np.float32)}
  if init != "torch":
    raise ValueError(f"head_init must be 'torch' or 'zeros'; got {init!r}.")
  rng = np.random.default_rng(seed)
  bound = 1.0 / np.sqrt(dim)
  return {
    "kernel": rng.uniform(-bound, bound, (dim, outputs)).astype(np.float32),
    "bias": rng.uniform(-bound, bound, (outputs,)).astype(np.float32),
  }


@dataclasses.dataclass
class HeadFns:
  """Jitted `step(params, opt_state, x, y, mask) -> (params, opt_state, loss)` and
  `predict(params, x) -> logits`, shared by every model of one architecture (one compile)."""

  step: Callable[..., Any]
  predict: Callable[..., Any]
  tx: Any


def make_head_fns(
  logits_fn: Callable[[Any, Any], Any],
  loss_fn: Callable[..., Any],
  *,
  learning_rate: float,
  weight_decay: float,
) -> HeadFns:
  """Jits the train step and the forward pass of `logits_fn(params, x) -> (B, K)`."""
  import jax
  import optax

  tx = optax.adamw(learning_rate, weight_decay=weight_decay)

  @jax.jit
  def step(params, opt_state, x, y, mask):
    loss, grads = jax.value_and_grad(lambda p: loss_fn(logits_fn(p, x), y, mask))(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  return HeadFns(step=step, predict=jax.jit(logits_fn), tx=tx)


def predict_batched(fns: HeadFns, params: Any, x: np.ndarray, batch_size: int) -> np.ndarray:
  """Logits of `x` `(N, ...)` in fixed-size batches (the last zero-padded: one compile)."""
  return embed.embed_array(fns.predict, params, x, batch_size=batch_size)


def record_mean(values: np.ndarray, owner: np.ndarray, num_records: int) -> np.ndarray:
  """Mean of the rows of `values` `(M, ...)` per record (`owner` `(M,)`): `(R, ...)`."""
  sums = np.zeros((num_records,) + values.shape[1:], np.float64)
  np.add.at(sums, owner, values)
  counts = np.bincount(owner, minlength=num_records).reshape((-1,) + (1,) * (values.ndim - 1))
  return (sums / np.maximum(counts, 1)).astype(np.float32)


def balanced_weights(y: np.ndarray) -> np.ndarray:
  """`(N,)` sampling weights inverse to the frequency of each example's class (`y` `(N,)` int),
  as the released code's WeightedRandomSampler: every class is drawn equally often."""
  y = np.asarray(y, np.int64)
  _, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
  return 1.0 / counts[inverse]


def fit(
  fns: HeadFns,
  params: Any,
  x: np.ndarray,
  y: np.ndarray,
  *,
  val_loss: Callable[[Any], float],
  batch_size: int,
  max_epochs: int,
  patience: int,
  min_delta: float,
  seed: int,
  sample_weights: np.ndarray | None = None,
) -> tuple[Any, dict[str, Any]]:
  """Trains `params` on `(x, y)` with early stopping; returns the best-validation params.

  Every epoch visits the train rows in a fresh seeded order (`default_rng([seed, epoch])`), in
  batches of `batch_size` (the last one padded and masked: one compiled shape); with
  `sample_weights` `(N,)` an epoch is instead N rows drawn with replacement with probability
  proportional to their weight (a WeightedRandomSampler, `balanced_weights`). After each
  epoch, `val_loss(params)` decides: training stops when it has not improved by `min_delta` for
  `patience` epochs (Lightning's EarlyStopping), and the params of the lowest validation loss
  are returned (its ModelCheckpoint).

  Returns:
    `(best params, {"epochs", "best_epoch", "best_val_loss", "history": [...]})`.
  """
  import jax

  n = len(x)
  bs = max(1, min(batch_size, n))
  steps = -(-n // bs)
  opt_state = fns.tx.init(params)
  best_params, best_loss, best_epoch = params, float("inf"), 0
  stop_ref, bad, history = float("inf"), 0, []
  p = None if sample_weights is None else np.asarray(sample_weights, np.float64)
  if p is not None:
    p = p / p.sum()
  for epoch in range(1, max_epochs + 1):
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(n) if p is None else rng.choice(n, size=n, replace=True, p=p)
    order = np.concatenate([order, np.zeros(steps * bs - n, np.int64)])
    mask = (np.arange(steps * bs) < n).astype(np.float32)
    losses = []
    for s in range(steps):
      idx = order[s * bs : (s + 1) * bs]
      params, opt_state, loss = fns.step(
        params, opt_state, x[idx], y[idx], mask[s * bs : (s + 1) * bs]
      )
      losses.append(loss)
    train_loss = float(np.mean(jax.device_get(losses)))
    current = float(val_loss(params))
    history.append({"epoch": epoch, "train_loss": train_loss, "val_loss": current})
    if not np.isfinite(current):
      break
    if current < best_loss:
      best_params, best_loss, best_epoch = params, current, epoch
    if current < stop_ref - min_delta:
      stop_ref, bad = current, 0
    else:
      bad += 1
      if bad >= patience:
        break
  return best_params, {
    "epochs": len(history),
    "best_epoch": best_epoch,
    "best_val_loss": best_loss,
    "history": history,
  }


def _val_loss(loss_fn: Callable[..., Any], logits: np.ndarray, y: np.ndarray) -> float:
  return float(loss_fn(logits, y, np.ones(len(logits), np.float32)))


def probe_head(
  fns: HeadFns,
  loss_fn: Callable[..., Any],
  z: np.ndarray,
  y: np.ndarray,
  rows: Mapping[str, np.ndarray],
  *,
  outputs: int,
  seed: int,
  head_init: str,
  balanced: bool = False,
  **fit_kwargs: Any,
) -> tuple[np.ndarray, dict[str, Any]]:
  """Linear probing: a head on frozen record embeddings `z` `(R, D)`.

  Args:
    fns: `make_head_fns` of the linear map `z @ kernel + bias`.
    loss_fn: `make_loss` of the task.
    z: `(R, D)` embeddings of every record.
    y: `(R, ...)` training targets (standardised for regression).
    rows: split name -> record indices.
    outputs: head outputs.
    seed: head init and shuffling seed.
    head_init: `init_head`'s `init`.
    balanced: class-balanced sampling of the train rows (`balanced_weights`; class targets).
    **fit_kwargs: `fit`'s batch_size, max_epochs, patience, min_delta.

  Returns:
    `(test logits (R_test, K), fit summary)`.
  """
  val = rows["validation"]
  params, summary = fit(
    fns,
    init_head(z.shape[1], outputs, seed, init=head_init),
    z[rows["train"]],
    y[rows["train"]],
    val_loss=lambda p: _val_loss(loss_fn, predict_batched(fns, p, z[val], 4096), y[val]),
    seed=seed,
    sample_weights=balanced_weights(y[rows["train"]]) if balanced else None,
    **fit_kwargs,
  )
  return predict_batched(fns, params, z[rows["test"]], 4096), summary


def backbone_logits_fn(model) -> Callable[[Any, Any], Any]:
  """`logits(params, x (B, L)) -> (B, K)`: the backbone's pooled embedding through the head,
  with `params = {"backbone": ..., "head": {"kernel", "bias"}}`."""

  def logits(params, x):
    emb, _ = model.apply({"params": params["backbone"]}, x[..., None], train=True)
    return emb @ params["head"]["kernel"] + params["head"]["bias"]

  return logits


def finetune(
  fns: HeadFns,
  loss_fn: Callable[..., Any],
  backbone: Backbone,
  records: Records,
  y: np.ndarray,
  rows: Mapping[str, np.ndarray],
  *,
  outputs: int,
  seed: int,
  head_init: str,
  balanced: bool = False,
  **fit_kwargs: Any,
) -> tuple[np.ndarray, dict[str, Any]]:
  """Full fine-tuning of `backbone` + a linear head on `records`' windows.

  The windows of the train records are the training examples, each with its record's target.
  Validation and test logits are averaged over each record's windows, which for a linear head
  equals the head applied to the mean embedding (the probe's `windows=all` rule). `balanced`:
  class-balanced sampling of the train windows (by their record's class).

  Returns:
    `(test logits (R_test, K), fit summary)`.
  """
  num_records = len(records.ids)
  win = {s: np.flatnonzero(np.isin(records.owner, r)) for s, r in rows.items()}

  def split_logits(params, split):
    out = predict_batched(fns, params, records.x[win[split]], fit_kwargs["batch_size"])
    return record_mean(out, records.owner[win[split]], num_records)[rows[split]]

  params = {
    "backbone": backbone.params,
    "head": init_head(backbone.model.features, outputs, seed, init=head_init),
  }
  y_train = y[records.owner[win["train"]]]
  params, summary = fit(
    fns,
    params,
    records.x[win["train"]],
    y_train,
    val_loss=lambda p: _val_loss(loss_fn, split_logits(p, "validation"), y[rows["validation"]]),
    seed=seed,
    sample_weights=balanced_weights(y_train) if balanced else None,
    **fit_kwargs,
  )
  return split_logits(params, "test"), summary


# ------------------------------------------------------------------------------------------------
# The closed-form option: ridge regression on the targets.
# ------------------------------------------------------------------------------------------------
def standardize(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
  """z-scores every array with the train set's per-feature mean and std."""
  mean = train.mean(axis=0)
  std = train.std(axis=0) + 1e-6
  return [(a - mean) / std for a in (train,) + others]


def ridge_targets(kind: str, y: np.ndarray, outputs: int) -> np.ndarray:
  """What ridge regresses on: one-hot (multiclass), 0/1 (binary), multi-hot, or the
  standardised regression target, as `(N, outputs)` float64."""
  if kind == "multiclass":
    return np.eye(outputs)[np.asarray(y, np.int64)]
  return np.asarray(y, np.float64).reshape(len(y), -1)


def fit_ridge(x: np.ndarray, targets: np.ndarray, l2: float) -> tuple[np.ndarray, np.ndarray]:
  """Least squares `x @ w + b ~ targets` + `l2 * N * |w|^2` (bias unpenalised), closed form.

  Args:
    x: `(N, D)` features.
    targets: `(N, K)`.
    l2: penalty strength (scaled by N, so one value suits any train size).

  Returns:
    `(w (D, K), b (K,))`.
  """
  n, d = x.shape
  x1 = np.concatenate([x, np.ones((n, 1))], axis=1)  # (N, D + 1)
  reg = l2 * n * np.eye(d + 1)
  reg[d, d] = 0.0
  theta = np.linalg.solve(x1.T @ x1 + reg, x1.T @ targets)  # (D + 1, K)
  return theta[:d], theta[d]


def ridge_head(
  z: np.ndarray,
  y: np.ndarray,
  rows: Mapping[str, np.ndarray],
  *,
  kind: str,
  outputs: int,
  l2_grid: Sequence[float] = L2_GRID,
) -> tuple[np.ndarray, dict[str, Any]]:
  """Linear probing in closed form: ridge on the train rows, L2 by validation squared error.

  Args:
    z: `(R, D)` embeddings of every record (standardised with train statistics by the caller).
    y: `(R, ...)` training targets (standardised for regression).
    rows: split name -> record indices.
    kind: the task kind (`ridge_targets`).
    outputs: head outputs.
    l2_grid: candidate L2 strengths; the first of the lowest validation error wins.

  Returns:
    `(test outputs (R_test, K), {"l2", "best_val_loss", "val_loss": {l2: error}})`; the outputs
    go through `scoring.metric_scores` like the AdamW head's logits.
  """
  x = np.asarray(z, np.float64)
  targets = ridge_targets(kind, y, outputs)
  tr, va = rows["train"], rows["validation"]
  errors = {}
  for l2 in l2_grid:
    w, b = fit_ridge(x[tr], targets[tr], l2)
    errors[float(l2)] = float(np.mean((x[va] @ w + b - targets[va]) ** 2))
  best = min(errors, key=errors.get)
  w, b = fit_ridge(x[tr], targets[tr], best)
  return x[rows["test"]] @ w + b, {"l2": best, "best_val_loss": errors[best], "val_loss": errors}
