"""Beats and leads of the demo archive's ECGs: layers 2 and 3 of `clef_jax.synthetic`'s model.

`simulate_records` turns subject parameters (`synthetic.simulate_subjects`) into one record per
subject: a McSharry-style sum of Gaussians per beat (P, Q, R, S, ST, two T lobes), each wave a 3-D
cardiac dipole evaluated in closed form around its centre, with AF (no P waves, irregular RR,
fibrillatory waves) and premature ventricular beats; the dipole projected on the 12 lead vectors,
then baseline wander, powerline hum, white noise, lost leads and NaN gaps, and the metadata vector
with random missingness and the measured heart rate / SDNN.
"""

from __future__ import annotations

import math

import numpy as np

# Metadata fields 0-8 count towards `rate_meta`; relative chance of each being missing.
_MISSING_WEIGHT = np.array([0.05, 0.05, 1.0, 0.8, 0.8, 1.0, 0.9, 0.3, 0.4])
_MAX_BEATS = 48  # RR >= 0.3 s over duration + margins; checked at run time.

# Waves per beat: P, Q, R, S, ST, T1 (slow ascending lobe), T2 (faster descending lobe).
_WAVES = ("P", "Q", "R", "S", "ST", "T1", "T2")
_NUM_WAVES = len(_WAVES)


def _base_lead_vectors() -> np.ndarray:
  """`(12, 3)` lead vectors in `schema.LEAD_ORDER`; axes x = left, y = inferior, z = anterior.

  Limb leads derive from I and II so that III = II - I, aVR = -(I + II)/2, aVL = (I - III)/2 and
  aVF = (II + III)/2 hold exactly, as on a real machine. Precordial leads lie in the horizontal
  plane at V1 ~ 120 deg (right-anterior) to V6 ~ 5 deg (left), with a closer-electrode gain.
  """
  lead_i = np.array([1.0, 0.0, 0.0])
  lead_ii = np.array([0.5, math.sqrt(3) / 2, 0.0])
  lead_iii = lead_ii - lead_i
  limb = [
    lead_i,
    lead_ii,
    lead_iii,
    -(lead_i + lead_ii) / 2,
    (lead_i - lead_iii) / 2,
    (lead_ii + lead_iii) / 2,
  ]
  angles = np.deg2rad([120.0, 95.0, 75.0, 55.0, 30.0, 5.0])
  gains = np.array([1.1, 1.5, 1.5, 1.4, 1.2, 1.0])
  chest = gains[:, None] * np.stack([np.cos(angles), np.full(6, 0.1), np.sin(angles)], axis=-1)
  return np.concatenate([np.stack(limb), chest]).astype(np.float64)


def _beat_times(subj, rng, duration_s):
  """R-peak times `(n, K)`, preceding RR `(n, K)`, PVC flags and validity mask."""
  n, k = subj["hr"].shape[0], _MAX_BEATS
  rr0 = 60.0 / subj["hr"]
  idx = np.arange(k)
  resp_f = rng.uniform(0.18, 0.33, n)
  phase = rng.uniform(0.0, 2 * np.pi, n)
  sinus = rr0[:, None] * (
    1.0
    + subj["rsa"][:, None]
    * np.sin(2 * np.pi * resp_f[:, None] * idx * rr0[:, None] + phase[:, None])
    + rng.normal(0.0, 0.012, (n, k))
  )
  cv = rng.uniform(0.15, 0.3, n)[:, None]  # AF: gamma-distributed RR with this CV.
  af = rr0[:, None] * rng.gamma(1.0 / cv**2, cv**2, (n, k))
  rr = np.where((subj["rhythm"] == 1)[:, None], af, sinus)
  # Ectopic class: PVCs (never two in a row) at 60 % coupling then a compensatory pause.
  pvc = (subj["rhythm"] == 2)[:, None] & (rng.random((n, k)) < 0.12)
  forced = rng.integers(2, 8, n)
  pvc[np.arange(n), forced] |= subj["rhythm"] == 2
  pvc[:, 0] = False
  pvc[:, 1:] &= ~pvc[:, :-1]
  after = np.zeros_like(pvc)
  after[:, 1:] = pvc[:, :-1]
  rr = np.where(pvc, 0.6 * rr, np.where(after, 1.4 * rr, rr))
  rr = np.maximum(rr, 0.3)
  t = np.cumsum(rr, axis=1) - rng.uniform(0.0, 1.0, n)[:, None] * rr0[:, None] - rr[:, :1]
  if np.any(t[:, -1] < duration_s + 0.5):
    raise AssertionError("_MAX_BEATS too small for the drawn heart rates.")
  valid = (t > -0.6) & (t < duration_s + 0.6)
  return t, rr, pvc, valid


def _waves(subj, t, rr, pvc):
  """Per beat and wave: centre `(n, K, W)` s, sigma `(n, K, W)` s, dipole `(n, K, W, 3)` mV."""
  n, k = t.shape
  col = lambda name: subj[name][:, None]  # noqa: E731  (n, 1) for broadcasting over beats.
  qrs = col("qrs")
  qt = col("qtc") * np.sqrt(np.clip(rr, 0.3, 2.0))  # Bazett with the preceding RR.
  tpk = qt - qrs / 2 - 0.075  # T peak after the R peak.
  zeros = np.zeros((n, k))
  af = (subj["rhythm"] == 1)[:, None]
  offsets = np.stack(
    [
      -col("pr") + zeros,
      -0.32 * qrs + zeros,
      zeros,
      0.30 * qrs + zeros,
      qrs / 2 + 0.07 + zeros,
      tpk - 0.02,
      tpk + 0.035,
    ],
    axis=-1,
  )
  sigmas = np.stack(
    [
      0.022 + zeros,
      0.09 * qrs + zeros,
      0.11 * qrs + zeros,
      0.10 * qrs + zeros,
      0.045 + zeros,
      0.055 * np.sqrt(np.clip(rr, 0.4, 1.5)),
      0.030 + zeros,
    ],
    axis=-1,
  )
  amps = np.stack(
    [
      np.where(af, 0.0, col("p_amp")) + zeros,
      0.12 * col("r_amp") + zeros,
      col("r_amp") + zeros,
      0.30 * col("r_amp") + zeros,
      col("st") + zeros,
      0.65 * col("t_amp") + zeros,
      0.45 * col("t_amp") + zeros,
    ],
    axis=-1,
  )
  dirs = np.stack(
    [subj["u_p"], subj["u_q"], subj["u_r"], subj["u_s"], subj["u_r"], subj["u_t"], subj["u_t"]],
    axis=1,
  )  # (n, W, 3)
  dip = amps[..., None] * dirs[:, None]  # (n, K, W, 3)

  # Premature ventricular beats: no P/Q/ST, one wide QRS along a random focus, discordant T.
  w = col("pvc_width") + zeros
  pv_off = np.stack([zeros, zeros, zeros, 0.35 * w, zeros, 0.28 + zeros, 0.33 + zeros], -1)
  pv_sig = np.stack(
    [0.02 + zeros, 0.01 + zeros, 0.25 * w, 0.2 * w, 0.04 + zeros, 0.06 + zeros, 0.035 + zeros], -1
  )
  pv_amp = np.stack(
    [
      zeros,
      zeros,
      col("pvc_amp") + zeros,
      -0.25 * col("pvc_amp") + zeros,
      zeros,
      -0.30 * col("pvc_amp") + zeros,
      -0.15 * col("pvc_amp") + zeros,
    ],
    -1,
  )
  pv_dip = pv_amp[..., None] * subj["u_pvc"][:, None, None, :]
  m = pvc[..., None]
  offsets = np.where(m, pv_off, offsets)
  sigmas = np.where(m, pv_sig, sigmas)
  dip = np.where(m[..., None], pv_dip, dip)
  return t[..., None] + offsets, sigmas, dip


def _render_dipole(centres, sigmas, dip, valid, fs, num_samples):
  """Sums every Gaussian wave into a `(n, 3, T)` dipole, each evaluated only near its centre."""
  n = centres.shape[0]
  pad = int(math.ceil(0.6 * fs))
  width = num_samples + 2 * pad
  out = np.zeros((3, n * width), dtype=np.float64)
  rows = np.broadcast_to(np.arange(n)[:, None], valid.shape)[valid]  # (M,) beat -> record row
  for w in range(_NUM_WAVES):
    c, s, d = centres[..., w][valid], sigmas[..., w][valid], dip[..., w, :][valid]  # (M,), (M,3)
    # +-3.5 sigma: the truncated tail is < 0.2 % of the peak, below the 5 uV quantisation step.
    half = int(math.ceil(3.5 * s.max() * fs))
    offs = np.arange(-half, half + 1)
    pos = np.rint(c * fs).astype(np.int64)[:, None] + offs  # (M, H) sample indices
    z = ((pos / fs - c[:, None]) / s[:, None]).astype(np.float32)
    g = np.exp(np.float32(-0.5) * z * z)  # (M, H)
    pos = np.clip(pos + pad, 0, width - 1) + (rows * width)[:, None]
    flat = pos.ravel()
    for axis in range(3):
      out[axis] += np.bincount(flat, weights=(g * d[:, axis, None]).ravel(), minlength=n * width)
  return out.reshape(3, n, width)[:, :, pad : pad + num_samples].transpose(1, 0, 2)


def simulate_records(
  subj: dict[str, np.ndarray],
  rng: np.random.Generator,
  *,
  sampling_rate: float = 500.0,
  duration_s: float = 10.0,
) -> dict[str, np.ndarray]:
  """Simulates one record per subject of `subj` (see `simulate_subjects`).

  Args:
    subj: subject parameters.
    rng: generator for this block's records (beat timing, noise, missingness).
    sampling_rate: Hz.
    duration_s: record length in seconds.

  Returns:
    `signal` `(n, T, 12)` float32 mV with NaN for missing samples, `lead_mask` `(n, 12)`,
    `metadata` `(n, 11)` float32 (NaN = missing), measured `heart_rate` and `sdnn_ms`.
  """
  n = subj["hr"].shape[0]
  num_samples = int(round(sampling_rate * duration_s))
  fs = float(sampling_rate)
  t, rr, pvc, valid = _beat_times(subj, rng, duration_s)
  centres, sigmas, dip = _waves(subj, t, rr, pvc)
  dipole = _render_dipole(centres, sigmas, dip, valid, fs, num_samples)  # (n, 3, T)

  time = (np.arange(num_samples) / fs).astype(np.float32)
  af = np.flatnonzero(subj["rhythm"] == 1)
  if af.size:  # Fibrillatory waves with a slowly drifting frequency (AF rows only).
    drift = 0.6 * np.sin(2 * np.pi * 0.13 * time + rng.uniform(0, 6.3, (af.size, 1)))
    phase = 2 * np.pi * np.cumsum(subj["f_freq"][af, None] + drift, axis=1) / fs
    fw = subj["f_amp"][af, None] * np.sin(phase + rng.uniform(0, 6.3, (af.size, 1)))
    dipole[af] += subj["u_f"][af, :, None] * fw[:, None, :]

  # Recording noise: respiration-driven baseline wander, slower drift, powerline hum. They and the
  # dipole are projected to the leads by one batched matmul: (n, T, 3+4+1) @ (n, 3+4+1, 12).
  resp = rng.uniform(0.15, 0.4, (n, 1)).astype(np.float32)
  slow = rng.uniform(0.03, 0.1, (n, 1)).astype(np.float32)
  mains = np.where(rng.random(n) < 0.5, 50.0, 60.0).astype(np.float32)[:, None]
  two_pi_t = np.float32(2 * np.pi) * time
  pl_phase = rng.uniform(0, 6.3, (n, 1)).astype(np.float32)
  sources = np.concatenate(
    [
      dipole.astype(np.float32),
      np.stack(
        [
          np.sin(resp * two_pi_t),
          np.cos(resp * two_pi_t),
          np.sin(slow * two_pi_t),
          np.cos(slow * two_pi_t),
          np.sin(mains * two_pi_t + pl_phase),
        ],
        axis=1,
      ),
    ],
    axis=1,
  )  # (n, 8, T)
  leads = _base_lead_vectors() @ subj["rotation"]  # (n, 12, 3)
  bw_coef = rng.normal(0.0, 1.0, (n, 4, 12)) * rng.uniform(0.01, 0.08, (n, 1, 1))
  pl_coef = rng.uniform(0.0, 0.012, (n, 1, 12))
  coef = np.concatenate([leads.transpose(0, 2, 1), bw_coef, pl_coef], axis=1)  # (n, 8, 12)
  x = np.matmul(sources.transpose(0, 2, 1), coef.astype(np.float32))  # (n, T, 12)
  # White measurement noise, 3-20 uV rms. Uniform rather than Gaussian: 4x cheaper to draw and
  # indistinguishable after quantisation and the 40 Hz low-pass.
  noise = rng.random((n, num_samples, 12), dtype=np.float32)
  noise -= np.float32(0.5)
  noise *= (math.sqrt(12.0) * rng.uniform(0.003, 0.02, (n, 1, 1))).astype(np.float32)
  x += noise
  del noise
  # Machines record I and II and compute the other limb leads, so Einthoven/Goldberger hold
  # exactly, noise included: III = II - I, aVR = -(I + II)/2, aVL = I - II/2, aVF = II - I/2.
  lead_i, lead_ii = x[..., 0], x[..., 1]
  x[..., 2] = lead_ii - lead_i
  x[..., 3] = -0.5 * (lead_i + lead_ii)
  x[..., 4] = lead_i - 0.5 * lead_ii
  x[..., 5] = lead_ii - 0.5 * lead_i

  # Acquisition defects: a lead off for the whole record, or a NaN gap in one lead.
  lead_mask = np.ones((n, 12), dtype=bool)
  lost = rng.random(n) < 0.03
  lost_lead = rng.integers(0, 12, n)
  lead_mask[np.flatnonzero(lost), lost_lead[lost]] = False
  x[np.flatnonzero(lost), :, lost_lead[lost]] = np.nan
  for i in np.flatnonzero(rng.random(n) < 0.03):
    length = int(rng.integers(10, max(11, num_samples // 20)))
    start = int(rng.integers(0, num_samples - length))
    x[i, start : start + length, int(rng.integers(0, 12))] = np.nan

  # Measured rate and SDNN from R peaks inside the record (what an ECG machine would report).
  inside = valid & (t >= 0) & (t < duration_s)
  rr_in = np.where(inside[:, 1:] & inside[:, :-1], np.diff(t, axis=1), np.nan)
  heart_rate = 60.0 / np.nanmean(rr_in, axis=1)
  sdnn_ms = 1000.0 * np.nanstd(rr_in, axis=1)

  meta = np.stack(
    [
      subj["sex"],
      subj["age"],
      subj["bmi"],
      subj["sbp"],
      subj["dbp"],
      subj["height_in"],
      subj["weight_lb"],
      heart_rate,
      sdnn_ms,
    ],
    axis=1,
  )
  p_missing = np.clip(subj["missing_propensity"][:, None] * _MISSING_WEIGHT, 0.0, 0.95)
  missing = rng.random(meta.shape) < p_missing
  meta = np.where(missing, np.nan, meta)
  rate_meta = 1.0 - missing.mean(axis=1)
  # Risk needs sex, age, SBP and labs (not in the vector); labs miss with the same propensity.
  labs_missing = rng.random(n) < 0.5 * subj["missing_propensity"]
  risk_obs = np.where(
    missing[:, 0] | missing[:, 1] | missing[:, 3] | labs_missing, np.nan, subj["risk"]
  )
  metadata = np.concatenate([meta, rate_meta[:, None], risk_obs[:, None]], axis=1)
  return dict(
    signal=x,
    lead_mask=lead_mask,
    metadata=metadata.astype(np.float32),
    heart_rate=heart_rate,
    sdnn_ms=sdnn_ms,
  )
