"""The monitors the train step computes on every batch (no gradients flow through these).

`embedding_metrics` gives the collapse / alignment monitors of one two-view batch: the spread of
the normalised embeddings, the positive and negative cosines, and `risk_spearman`, the Spearman
correlation between embedding similarity and risk similarity over a fixed, bounded set of
subject pairs (`monitor_pairs`), so its cost does not grow with the global batch squared.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from clef_jax import losses

Array = jax.Array
Metrics = dict[str, Array]


def _average_ranks(x: Array, valid: Array) -> Array:
  """0-based ranks of `x` among the `valid` entries, ties get their average rank.

  Invalid entries are pushed to +inf so they sort last and never shift a valid entry's rank.
  `searchsorted` left/right give the first and one-past-last position of each value's tie group,
  so `(lo + hi - 1) / 2` is the average rank, as `scipy.stats.rankdata(method="average")`.
  """
  x = jnp.where(valid, x, jnp.inf)
  s = jnp.sort(x)
  lo = jnp.searchsorted(s, x, side="left")
  hi = jnp.searchsorted(s, x, side="right")
  return (lo + hi - 1).astype(jnp.float32) / 2.0


def masked_spearman(x: Array, y: Array, valid: Array, *, min_count: int = 3) -> Array:
  """Spearman rank correlation of `x` and `y` `(P,)` over the entries where `valid` is True.

  Returns NaN when fewer than `min_count` entries are valid or either side is constant (the
  correlation is undefined there; a 0 would look like a real measurement).
  """
  valid = valid & jnp.isfinite(x) & jnp.isfinite(y)
  w = valid.astype(jnp.float32)
  n = jnp.sum(w)
  rx, ry = _average_ranks(x, valid), _average_ranks(y, valid)
  mx = jnp.sum(w * rx) / jnp.maximum(n, 1.0)
  my = jnp.sum(w * ry) / jnp.maximum(n, 1.0)
  dx, dy = w * (rx - mx), w * (ry - my)
  cov, vx, vy = jnp.sum(dx * dy), jnp.sum(dx * dx), jnp.sum(dy * dy)
  ok = (n >= min_count) & (vx > 0) & (vy > 0)
  return jnp.where(ok, cov / jnp.sqrt(jnp.where(ok, vx * vy, 1.0)), jnp.nan)


RISK_SPEARMAN_PAIRS = 4096


def monitor_pairs(b: int, max_pairs: int = RISK_SPEARMAN_PAIRS) -> tuple[np.ndarray, np.ndarray]:
  """The subject pairs `(i, k)`, i != k, that `risk_spearman` ranks in a batch of `b` subjects.

  All b (b - 1) / 2 pairs when there are at most `max_pairs` (or `max_pairs` <= 0); otherwise
  exactly `max_pairs` of them, fixed and deterministic: every subject with the next one
  (cyclically, offset 1), then with the one after (offset 2), and so on, so each subject enters
  about equally often and no pair twice. Static numpy indices (the step's shapes depend on them).
  """
  total = b * (b - 1) // 2
  if max_pairs <= 0 or total <= max_pairs:
    return np.triu_indices(b, k=1)
  i_parts, k_parts, count, offset = [], [], 0, 1
  while count < max_pairs:
    # Offset b/2 (even b) pairs each subject with the same partner from both sides: half only.
    rows = np.arange(b // 2 if 2 * offset == b else b)
    i_parts.append(rows)
    k_parts.append((rows + offset) % b)
    count += rows.size
    offset += 1
  return (np.concatenate(i_parts)[:max_pairs], np.concatenate(k_parts)[:max_pairs])


def embedding_metrics(
  z1: Array, z2: Array, risk: Array | None = None, *, risk_pairs: int = RISK_SPEARMAN_PAIRS
) -> Metrics:
  """Collapse / alignment monitors on one two-view batch.

  Args:
    z1: `(B, D)` embeddings of view 1 (online encoder).
    z2: `(B, D)` embeddings of view 2 (online encoder; MoCo: the key encoder).
    risk: optional `(B,)` risk scores, NaN = missing.
    risk_pairs: most subject pairs `risk_spearman` ranks (`monitor_pairs`); <= 0: all pairs.

  Returns:
    float32 scalars:
      embedding_std: mean over dims of the per-dim std of the 2B L2-normalised embeddings
        (-> 0 under collapse; ~1/sqrt(D) for isotropic embeddings).
      pos_cos: mean cosine similarity of the B positive pairs (view 1 vs view 2, same subject).
      neg_cos: mean cosine similarity over all ordered row pairs of different subjects.
      risk_spearman (with `risk`): Spearman correlation, over the subject pairs of
        `monitor_pairs(B, risk_pairs)` with both risks present, between the embedding
        similarity sim_ik (mean of the four view-pair cosines) and the risk similarity
        -|r_i - r_k|; NaN with < 3 valid pairs. Ties share their average rank (exact Spearman,
        as scipy).
      risk_pairs (with `risk`): number of pairs that entered `risk_spearman`.

  Nothing here forms the (2B, 2B) similarity matrix: neg_cos is the sum over all row pairs,
  |sum_r u_r|^2, less the rows with themselves and with their other view, and sim_ik is
  v_i . v_k with v = (u1 + u2) / 2, on the sampled pairs only.
  """
  b = z1.shape[0]
  u = losses.l2_normalize(jnp.concatenate([z1, z2], axis=0))  # (2B, D)
  u = u.astype(jnp.promote_types(u.dtype, jnp.float32))
  u1, u2 = u[:b], u[b:]
  pos = jnp.sum(u1 * u2, axis=1)  # (B,)
  everything = jnp.sum(jnp.square(jnp.sum(u, axis=0)))
  same = jnp.sum(jnp.square(u)) + 2.0 * jnp.sum(pos)
  metrics = {
    "embedding_std": jnp.mean(jnp.std(u, axis=0)),
    "pos_cos": jnp.mean(pos),
    "neg_cos": (everything - same) / max(4 * b * b - 4 * b, 1),
  }
  if risk is not None:
    iu, ku = monitor_pairs(b, risk_pairs)
    v = (u1 + u2) / 2.0
    sim = jnp.sum(v[iu] * v[ku], axis=1)  # (P,)
    r = jnp.asarray(risk, jnp.float32)
    risk_sim = -jnp.abs(r[iu] - r[ku])
    valid = jnp.isfinite(r)[iu] & jnp.isfinite(r)[ku]
    metrics["risk_spearman"] = masked_spearman(sim, risk_sim, valid)
    metrics["risk_pairs"] = jnp.sum(valid).astype(jnp.float32)
  return metrics
