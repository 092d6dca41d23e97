"""Contrastive objectives: NT-Xent, CLEF's clinically weighted InfoNCE + alignment, MoCo, BYOL.

Pure `jnp` functions on *global* arrays (docs/method.md §C): under `jax.jit` with a sharded
batch XLA inserts the gathers. All arithmetic is float32 whatever the input dtype.

Batch layout (docs/method.md §C.1): `z` is `(N, D)` with N = 2B; row a < B is view 1 of subject a, row a >= B
is view 2 of subject a - B. sigma(a) = a mod B is the subject, p(a) = (a + B) mod N the positive.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array

# Epsilons of the official code (docs/method.md §C.3-C.5).
NORM_EPS = 1e-12  # F.normalize: z / max(||z||, eps)
RISK_EPS = 1e-6  # min-max of the squared risk differences
NCE_EPS = 1e-8  # added to the weighted-InfoNCE denominator
SIM_EPS = 1e-6  # min-max of the cosine-similarity matrix


def l2_normalize(x: Array, *, axis: int = -1, eps: float = NORM_EPS) -> Array:
  """`x / max(||x||, eps)` (torch `F.normalize`), with finite gradients at `x = 0`.

  The norm is `sqrt(max(sum x^2, eps^2))`, which has the same value as `max(||x||, eps)` but never
  differentiates `sqrt` at 0, so zero rows get zero (not NaN) gradients.

  Args:
    x: array of any float dtype; normalised along `axis` in float32.
    axis: axis to normalise.
    eps: lower bound on the norm.

  Returns:
    float32 array of `x`'s shape.
  """
  x = x.astype(jnp.float32)
  sq = jnp.sum(jnp.square(x), axis=axis, keepdims=True)
  return x * jax.lax.rsqrt(jnp.maximum(sq, eps * eps))


def cosine_similarity_matrix(z: Array) -> Array:
  """S_ab = u_a . u_b with u = l2_normalize(z); `(N, D) -> (N, N)` float32."""
  u = l2_normalize(z)
  return u @ u.T  # (N, D) @ (D, N) -> (N, N)


def _pair_masks(n: int) -> tuple[Array, Array]:
  """Boolean `(N, N)` masks of the diagonal (a == b) and the positive pairs (b == p(a))."""
  b = n // 2
  rows = jnp.arange(n)[:, None]
  cols = jnp.arange(n)[None, :]
  return rows == cols, cols == (rows + b) % n


def _check_pairs(z: Array) -> None:
  if z.ndim != 2 or z.shape[0] % 2 or z.shape[0] == 0:
    raise ValueError(f"z must be (2B, D) with B >= 1 (view 1 rows, then view 2); got {z.shape}.")


def _reduce(per_row: Array, reduction: str) -> Array:
  if reduction == "mean":
    return jnp.mean(per_row)
  if reduction == "none":
    return per_row
  raise ValueError(f"reduction must be 'mean' or 'none'; got {reduction!r}.")


# ------------------------------------------------------------------------------------------------
# Plain InfoNCE (SimCLR / NT-Xent), docs/method.md §C.2.
# ------------------------------------------------------------------------------------------------
def info_nce(z: Array, *, temperature: float = 0.07, reduction: str = "mean") -> Array:
  """NT-Xent on a two-view batch (docs/method.md §C.2; the `use_metadata=False` / SimCLR objective).

  For each row a: cross-entropy over the logits S_ab / tau for b != a, with label p(a). Equals the
  official `[positive | 2B - 2 negatives]` CE with label 0, mean over all 2B rows.

  With B = 1 each row has only its positive, so the loss is 0 (and its gradient is 0).

  Args:
    z: `(2B, D)` embeddings, view-1 rows then view-2 rows; any float dtype (computed in float32).
    temperature: tau (fixed 0.07 in CLEF).
    reduction: "mean" -> scalar; "none" -> per-row losses `(2B,)`.

  Returns:
    float32 scalar (or `(2B,)` with `reduction="none"`).
  """
  _check_pairs(z)
  logits = cosine_similarity_matrix(z) / temperature  # (N, N)
  diag, pos = _pair_masks(z.shape[0])
  logits_pos = jnp.sum(jnp.where(pos, logits, 0.0), axis=1)  # (N,)
  lse = jax.nn.logsumexp(jnp.where(diag, -jnp.inf, logits), axis=1)  # (N,), self removed
  return _reduce(lse - logits_pos, reduction)


# ------------------------------------------------------------------------------------------------
# CLEF: clinical dissimilarity (§C.3), weighted InfoNCE L^w (§C.4), alignment L^d (§C.5).
# ------------------------------------------------------------------------------------------------
MISSING_RISK = ("zero", "exclude")
NAN_RATE_META = ("propagate", "zero")
WEIGHT_NORMALIZATION = ("row_softmax", "multiply")
COMBINE = ("mean", "sum")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
  if value not in choices:
    raise ValueError(f"{name} must be one of {choices}; got {value!r}.")


def risk_dissimilarity(
  risk: Array,
  *,
  rate_meta: Array | None = None,
  alpha: float = 0.2,
  missing_risk: str = "zero",
  nan_rate_meta: str = "propagate",
) -> tuple[Array, dict[str, Array]]:
  """Subject-level clinical dissimilarity W = D (. M) of docs/method.md §C.3.

  Official semantics (defaults): r = nan_to_num(risk) (NaN/inf -> 0); Delta_ik = (r_i - r_k)^2;
  min-max over the whole B x B matrix (diagonal included) with +1e-6 in the denominator;
  D = (1 - alpha) Delta~ + alpha, then D_ii = 0. With `rate_meta`, W = D * exp(-q_i q_k).

  The meta-similarity T = 1 - W is returned too, computed as (1 - M) + M (1 - alpha)(1 - Delta~)
  with 1 - Delta~ = (max - Delta + eps) / (max - min + eps): the same value without float32
  cancellation (the entry at the max Delta is ~8e-9, not 0 or 6e-8).

  Args:
    risk: `(B,)` per-subject risk score (SCORE2, fraction or percent: the scale cancels); NaN =
      missing.
    rate_meta: optional `(B,)` fraction of metadata available, q_i; when given the missing-metadata
      multiplier M_ik = exp(-q_i q_k) is applied (the official `use_mask=True` path).
    alpha: minimum off-diagonal dissimilarity (the code's `temp`, the paper's alpha).
    missing_risk: "zero" (official: a missing risk is a real risk of 0) or "exclude" (pairs where
      either subject lacks a risk get the neutral dissimilarity c = the mean of D over the valid
      off-diagonal pairs ((1 + alpha)/2 if there are none), and the min-max only sees valid pairs).
    nan_rate_meta: "propagate" (official: a NaN q makes its rows/cols of W NaN) or "zero"
      (NaN q -> 0, i.e. "no metadata available", M = 1).

  Returns:
    `(W, extras)`: W `(B, B)` float32 (diagonal 0); extras `meta_similarity` T = 1 - W `(B, B)` and
    `pair_valid` `(B, B)` bool (both risks present, or i == k; all True with missing_risk="zero").
  """
  _check_choice("missing_risk", missing_risk, MISSING_RISK)
  _check_choice("nan_rate_meta", nan_rate_meta, NAN_RATE_META)
  risk = jnp.asarray(risk).astype(jnp.float32)
  if risk.ndim != 1:
    raise ValueError(f"risk must be (B,); got {risk.shape}.")
  b = risk.shape[0]
  eye = jnp.eye(b, dtype=bool)
  finite = jnp.isfinite(risk)  # (B,)
  r = jnp.where(finite, risk, 0.0)  # nan_to_num (NaN, +-inf -> 0)
  delta = jnp.square(r[:, None] - r[None, :])  # (B, B)

  if missing_risk == "zero":
    both = jnp.ones((b, b), bool)
  else:
    both = finite[:, None] & finite[None, :]
  # Min-max over the (valid part of the) whole matrix, diagonal included: min is 0 in practice.
  any_valid = jnp.any(both)
  mn = jnp.where(any_valid, jnp.min(jnp.where(both, delta, jnp.inf)), 0.0)
  mx = jnp.where(any_valid, jnp.max(jnp.where(both, delta, -jnp.inf)), 0.0)
  denom = mx - mn + RISK_EPS
  delta_n = (delta - mn) / denom  # Delta~ in [0, 1)
  one_minus_delta_n = (mx - delta + RISK_EPS) / denom  # 1 - Delta~, without cancellation
  d = (1.0 - alpha) * delta_n + alpha
  one_minus_d = (1.0 - alpha) * one_minus_delta_n

  if missing_risk == "exclude":
    offdiag_valid = both & ~eye
    n_valid = jnp.sum(offdiag_valid)
    neutral = jnp.where(
      n_valid > 0,
      jnp.sum(jnp.where(offdiag_valid, d, 0.0)) / jnp.maximum(n_valid, 1),
      (1.0 + alpha) / 2.0,
    )
    d = jnp.where(both, d, neutral)
    one_minus_d = jnp.where(both, one_minus_d, 1.0 - neutral)
  # Alpha is added first, then the diagonal is zeroed (quirk §C.7.2).
  d = jnp.where(eye, 0.0, d)
  one_minus_d = jnp.where(eye, 1.0, one_minus_d)

  if rate_meta is None:
    w, t = d, one_minus_d
  else:
    q = jnp.asarray(rate_meta).astype(jnp.float32)
    if q.shape != risk.shape:
      raise ValueError(f"rate_meta must have risk's shape {risk.shape}; got {q.shape}.")
    if nan_rate_meta == "zero":
      q = jnp.where(jnp.isnan(q), 0.0, q)
    qq = q[:, None] * q[None, :]  # (B, B)
    m = jnp.exp(-qq)
    w = d * m
    t = -jnp.expm1(-qq) + m * one_minus_d  # = 1 - D M, accurate near 0
  return w, {"meta_similarity": t, "pair_valid": both | eye}


def _tile_pairs(x: Array, n: int) -> Array:
  """Subject-level `(B, B)` -> row-level `(N, N)`: x_tiled[a, b] = x[a mod B, b mod B]."""
  if x.shape == (n, n):
    return x
  if x.shape != (n // 2, n // 2):
    raise ValueError(f"pair matrix must be (B, B) or (2B, 2B) with 2B = {n}; got {x.shape}.")
  return jnp.tile(x, (2, 2))


def weighted_info_nce(
  z: Array,
  weights: Array,
  *,
  temperature: float = 0.07,
  weight_normalization: str = "row_softmax",
  reduction: str = "mean",
) -> Array:
  """CLEF's weighted InfoNCE L^w (`_meta_nce_loss`, docs/method.md §C.4).

  l_a = -log( E_pos / (E_pos + sum_{b not in {a, p(a)}} w_ab E_ab + 1e-8) ) with
  E_ab = exp(S_ab / tau - m_a), m_a = max_{b != a} S_ab / tau (a stop-gradient shift). The positive
  is unweighted. `-log E_pos` is evaluated as `m_a - S_{a,p(a)} / tau` (same value, never log 0).

  Args:
    z: `(2B, D)` embeddings (view-1 rows, then view-2 rows); computed in float32.
    weights: the dissimilarity W, subject-level `(B, B)` (tiled to `(2B, 2B)`) or row-level
      `(2B, 2B)`; self and positive entries are expected to be 0.
    temperature: tau.
    weight_normalization: "row_softmax" (official: w_ab = softmax over the *full* row of W, self and
      positive columns included, so each negative weighs ~1/N) or "multiply" (paper reading:
      w_ab = W_ab multiplies each negative).
    reduction: "mean" -> scalar, "none" -> `(2B,)`.

  Returns:
    float32 scalar (or per-row losses).
  """
  _check_pairs(z)
  _check_choice("weight_normalization", weight_normalization, WEIGHT_NORMALIZATION)
  n = z.shape[0]
  w = _tile_pairs(jnp.asarray(weights).astype(jnp.float32), n)  # (N, N)
  if weight_normalization == "row_softmax":
    w = jax.nn.softmax(w, axis=1)  # over all N columns, self and positive included
  logits = cosine_similarity_matrix(z) / temperature  # (N, N)
  diag, pos = _pair_masks(n)
  neg = ~(diag | pos)
  shift = jax.lax.stop_gradient(jnp.max(jnp.where(diag, -jnp.inf, logits), axis=1, keepdims=True))
  shifted = logits - shift  # (N, N), <= 0 off the diagonal
  pos_shifted = jnp.sum(jnp.where(pos, shifted, 0.0), axis=1)  # (N,)
  e = jnp.exp(jnp.where(diag, -jnp.inf, shifted))  # (N, N), 0 on the diagonal
  neg_sum = jnp.sum(jnp.where(neg, w * e, 0.0), axis=1)  # (N,)
  per_row = jnp.log(jnp.exp(pos_shifted) + neg_sum + NCE_EPS) - pos_shifted
  return _reduce(per_row, reduction)


def similarity_alignment_loss(
  z: Array,
  target: Array,
  *,
  minmax_include_diagonal: bool = True,
  pair_mask: Array | None = None,
) -> Array:
  """CLEF's similarity-alignment loss L^d (`_similarity_alignment_loss`, docs/method.md §C.5).

  S^ = (S - min S) / (max S - min S + 1e-6); L^d = mean_{a,b} (S^_ab - T_ab)^2 over all N^2 entries.

  Args:
    z: `(2B, D)` embeddings; computed in float32.
    target: meta-similarity T = 1 - W, subject-level `(B, B)` or row-level `(2B, 2B)`.
    minmax_include_diagonal: True (official): min/max of S and the MSE mean run over all N^2
      entries, diagonal included (max S ~ 1 from self-similarity). False: both run over the
      off-diagonal entries only (the positives stay in).
    pair_mask: optional `(B, B)` / `(2B, 2B)` bool; only True pairs enter the MSE mean (used by
      `missing_risk="exclude"`). None: all pairs.

  Returns:
    float32 scalar.
  """
  _check_pairs(z)
  n = z.shape[0]
  t = _tile_pairs(jnp.asarray(target).astype(jnp.float32), n)  # (N, N)
  s = cosine_similarity_matrix(z)  # (N, N)
  keep = jnp.ones((n, n), bool) if pair_mask is None else _tile_pairs(jnp.asarray(pair_mask), n)
  stats = jnp.ones((n, n), bool)
  if not minmax_include_diagonal:
    off = ~jnp.eye(n, dtype=bool)
    stats = off
    keep = keep & off
  mn = jnp.min(jnp.where(stats, s, jnp.inf))
  mx = jnp.max(jnp.where(stats, s, -jnp.inf))
  s_hat = (s - mn) / (mx - mn + SIM_EPS)
  sq = jnp.where(keep, jnp.square(s_hat - t), 0.0)
  return jnp.sum(sq) / jnp.maximum(jnp.sum(keep), 1)


def clef_loss(
  z: Array,
  risk: Array,
  *,
  rate_meta: Array | None = None,
  temperature: float = 0.07,
  alpha: float = 0.2,
  use_mask: bool = False,
  nan_rate_meta: str = "propagate",
  missing_risk: str = "zero",
  weight_normalization: str = "row_softmax",
  minmax_include_diagonal: bool = True,
  combine: str = "mean",
) -> tuple[Array, dict[str, Array]]:
  """The CLEF pretraining loss (docs/method.md §C.3-C.7), official semantics by default.

  total = (L^w + L^d) / 2 with W from `risk_dissimilarity`, L^w = `weighted_info_nce(z, W)` and
  L^d = `similarity_alignment_loss(z, 1 - W)`. Each keyword below switches one §C.7 quirk; see
  docs/objective.md for the table.

  Args:
    z: `(2B, D)` embeddings, view-1 rows then view-2 rows (global array; any float dtype).
    risk: `(B,)` per-subject `score2_risk` (metadata column 10); NaN = missing.
    rate_meta: `(B,)` per-subject fraction of metadata available (column 9); required when
      `use_mask`.
    temperature: tau (0.07).
    alpha: minimum off-diagonal dissimilarity (0.2).
    use_mask: apply M = exp(-q_i q_k) (official training_step: False).
    nan_rate_meta: "propagate" (official) | "zero" (NaN q treated as 0 available).
    missing_risk: "zero" (official nan_to_num) | "exclude" (neutral weight, dropped from L^d).
    weight_normalization: "row_softmax" (official) | "multiply" (paper reading).
    minmax_include_diagonal: L^d min-max and mean over all N^2 entries (official True).
    combine: "mean" (official code: (L^w + L^d) / 2) | "sum" (paper: L^w + L^d).

  Returns:
    `(total, {"weighted_nce": L^w, "alignment": L^d})`, float32 scalars.
  """
  _check_choice("combine", combine, COMBINE)
  if use_mask and rate_meta is None:
    raise ValueError("use_mask=True needs rate_meta (metadata column 9).")
  w, extras = risk_dissimilarity(
    risk,
    rate_meta=rate_meta if use_mask else None,
    alpha=alpha,
    missing_risk=missing_risk,
    nan_rate_meta=nan_rate_meta,
  )
  l_w = weighted_info_nce(z, w, temperature=temperature, weight_normalization=weight_normalization)
  l_d = similarity_alignment_loss(
    z,
    extras["meta_similarity"],
    minmax_include_diagonal=minmax_include_diagonal,
    pair_mask=extras["pair_valid"] if missing_risk == "exclude" else None,
  )
  total = l_w + l_d
  if combine == "mean":
    total = total / 2.0
  return total, {"weighted_nce": l_w, "alignment": l_d}


# ------------------------------------------------------------------------------------------------
# Baselines in the same module (docs/method.md §C.9).
# ------------------------------------------------------------------------------------------------
def moco_loss(q: Array, k: Array, queue: Array, *, temperature: float = 0.07) -> Array:
  """MoCo v2 InfoNCE: logits `[q.k+ | q.queue] / tau`, cross-entropy with label 0, batch mean.

  q and k are L2-normalised here; the queue is used as given (the official queue holds normalised
  keys). k and the queue carry no gradient (the key encoder is a momentum copy).

  Args:
    q: `(B, D)` queries (view 1 through the online encoder).
    k: `(B, D)` keys (view 2 through the momentum encoder).
    queue: `(D, K)` negative keys (official layout).
    temperature: tau.

  Returns:
    float32 scalar.
  """
  q = l2_normalize(q)
  k = jax.lax.stop_gradient(l2_normalize(k))
  queue = jax.lax.stop_gradient(jnp.asarray(queue).astype(jnp.float32))
  l_pos = jnp.sum(q * k, axis=1, keepdims=True)  # (B, 1)
  l_neg = q @ queue  # (B, D) @ (D, K) -> (B, K)
  logits = jnp.concatenate([l_pos, l_neg], axis=1) / temperature  # (B, 1 + K)
  return jnp.mean(jax.nn.logsumexp(logits, axis=1) - logits[:, 0])


def byol_loss(p1: Array, z2t: Array, p2: Array, z1t: Array) -> Array:
  """Symmetric BYOL loss: mean over the batch of (2 - 2 cos(p1, z2t)) + (2 - 2 cos(p2, z1t)).

  Targets (`z*t`, from the EMA network) carry no gradient.

  Args:
    p1: `(B, D)` online predictions for view 1.
    z2t: `(B, D)` target projections of view 2.
    p2: `(B, D)` online predictions for view 2.
    z1t: `(B, D)` target projections of view 1.

  Returns:
    float32 scalar.
  """

  def term(p, zt):
    zt = jax.lax.stop_gradient(l2_normalize(zt))
    return 2.0 - 2.0 * jnp.sum(l2_normalize(p) * zt, axis=-1)  # (B,)

  return jnp.mean(term(p1, z2t) + term(p2, z1t))
