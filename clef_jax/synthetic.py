"""Synthetic 12-lead ECGs with correlated clinical metadata: the embedded demo archive.

Everything here is our own closed-form numpy model; nothing is downloaded and no third-party
simulator is used. Output is a deterministic function of `(seed, subject index, record index)`.

Model, in three layers:

1. **Subjects** (`simulate_subjects`): sex, age 40-89, height, BMI/weight, SBP/DBP, total and HDL
   cholesterol, smoking and diabetes are drawn with the usual epidemiological correlations
   (age -> SBP, BMI -> SBP/diabetes/HDL, male -> lower HDL, ...). SCORE2/SCORE2-OP risk comes from
   `clef_jax.risk`. Rhythm class (sinus / AF / sinus with ectopic beats) and the ECG morphology
   parameters depend on those variables, so age, sex, rhythm and risk are learnable from one lead:
   - heart rate: sex, BMI, smoking, diabetes, risk; AF runs faster;
   - heart-rate variability (respiratory sinus arrhythmia) falls with age;
   - PR interval and QRS width grow with age (plus bundle-branch-block-like widening);
   - electrical axis rotates left with age and BMI;
   - QRS voltage rises with SBP (LVH) and male sex, falls with BMI;
   - QTc is longer in women and with risk; with risk T waves flatten/invert and ST drops.
2. **Beats** (`simulate_records`, in `clef_jax.synthetic_beats` with layer 3): a McSharry-style sum of Gaussians per beat (P, Q, R, S, ST, two
   T lobes), each wave a 3-D cardiac dipole `amplitude * direction`, evaluated in closed form
   around its centre. AF removes P waves, draws irregular RR intervals and adds 4-9 Hz fibrillatory
   waves; the ectopic class inserts wide premature ventricular beats with a compensatory pause.
3. **Leads**: the dipole is projected on lead vectors (Einthoven/Goldberger-consistent limb leads,
   precordial leads in the horizontal plane, a per-subject heart rotation), then baseline wander,
   powerline hum and white noise are added, the signal is quantised to int16 at 200 adu/mV (as
   MIMIC-IV-ECG), and a few records lose a lead (`lead_mask` False) or get a NaN gap.

Metadata go into the docs/method.md §D 11-vector (`clef_jax.data.schema.METADATA_FIELDS`) with random missingness, so
`rate_meta` (fraction of fields 0-8 present) varies in [0, 1]. `heart_rate` and `heart_rate_var`
(SDNN, ms) are measured from each record's simulated RR intervals.

Vectorisation: subjects are generated in fixed blocks of `BLOCK_SUBJECTS`, each seeded by
`(seed, block)`, so subject k's data do not depend on `num_subjects` or on which split is built.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from clef_jax.data import schema
from clef_jax.synthetic_beats import simulate_records

BLOCK_SUBJECTS = 50
DIGITAL_GAIN = 200.0  # adu/mV, as MIMIC-IV-ECG.
RHYTHMS: tuple[str, ...] = ("sinus", "af", "ectopic")
AGE_BANDS: tuple[str, ...] = ("40-49", "50-59", "60-69", "70-79", "80-89")
SEXES: tuple[str, ...] = ("female", "male")  # Index = metadata code (F -> 0, else 1).


def _unit(v: np.ndarray) -> np.ndarray:
  return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def _rotations(rng: np.random.Generator, n: int, sd_deg: float) -> np.ndarray:
  """`(n, 3, 3)` small random rotations (heart position varies between people)."""
  angles = np.deg2rad(rng.normal(0.0, sd_deg, size=(n, 3)))
  cx, cy, cz = np.cos(angles).T
  sx, sy, sz = np.sin(angles).T
  one, zero = np.ones(n), np.zeros(n)
  rx = np.stack([one, zero, zero, zero, cx, -sx, zero, sx, cx], -1).reshape(n, 3, 3)
  ry = np.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], -1).reshape(n, 3, 3)
  rz = np.stack([cz, -sz, zero, sz, cz, zero, zero, zero, one], -1).reshape(n, 3, 3)
  return rz @ ry @ rx


def _direction(frontal_deg: np.ndarray, elevation_deg: np.ndarray) -> np.ndarray:
  """Unit dipole from a frontal-plane axis (0 = lead I, +90 = aVF) and an anterior elevation."""
  a, b = np.deg2rad(frontal_deg), np.deg2rad(elevation_deg)
  return np.stack([np.cos(a) * np.cos(b), np.sin(a) * np.cos(b), np.sin(b)], axis=-1)


def compute_risk(*, sex, age, smoking, sbp, total_chol, hdl_chol, diabetes) -> np.ndarray:
  """SCORE2 (< 70 y) / SCORE2-OP (>= 70 y) 10-year risk fraction, ESC moderate-risk region."""
  from clef_jax import risk  # Lazy: keeps this module importable on its own.

  return np.asarray(
    risk.score2(
      sex=sex,
      age=age,
      smoking=smoking,
      sbp=sbp,
      total_chol=total_chol,
      hdl_chol=hdl_chol,
      diabetes=diabetes,
      region="moderate",
    ),
    dtype=np.float64,
  )


def simulate_subjects(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
  """Draws `n` subjects: clinical variables, risk, rhythm class and ECG morphology parameters.

  Args:
    rng: generator for this block of subjects.
    n: number of subjects.

  Returns:
    Dict of `(n,)` arrays (and `(n, 3)` / `(n, 3, 3)` for directions and rotations).
  """
  male = (rng.random(n) < 0.5).astype(np.float64)
  age = np.floor(rng.uniform(40.0, 90.0, n))
  a40 = age - 40.0
  height_in = np.where(male > 0, rng.normal(69.3, 2.9, n), rng.normal(63.8, 2.7, n)) - 0.03 * a40
  bmi = np.clip(np.exp(rng.normal(np.log(27.0), 0.17, n)), 16.0, 55.0)
  weight_lb = bmi * height_in**2 / 703.0
  b27 = bmi - 27.0
  smoking = (rng.random(n) < _sigmoid(-1.1 + 0.4 * male - 0.035 * a40)).astype(np.float64)
  diabetes = (rng.random(n) < _sigmoid(-3.3 + 0.035 * a40 + 0.09 * b27)).astype(np.float64)
  sbp = np.clip(
    112.0 + 0.55 * a40 + 0.9 * b27 + 4.0 * male + 5.0 * diabetes + rng.normal(0.0, 14.0, n),
    85.0,
    220.0,
  )
  dbp = 0.35 * sbp + 34.0 + 0.3 * b27 - 0.12 * (age - 60.0) + rng.normal(0.0, 7.0, n)
  dbp = np.clip(dbp, 45.0, np.minimum(130.0, sbp - 15.0))
  total_chol = np.clip(
    5.4 - 0.25 * male + 0.008 * a40 * (1.0 - male) + rng.normal(0.0, 0.95, n), 2.6, 9.5
  )
  hdl_chol = np.clip(
    1.55 - 0.28 * male - 0.025 * b27 - 0.08 * smoking + rng.normal(0.0, 0.3, n), 0.6, 3.0
  )
  risk = compute_risk(
    sex=male,
    age=age,
    smoking=smoking,
    sbp=sbp,
    total_chol=total_chol,
    hdl_chol=hdl_chol,
    diabetes=diabetes,
  )
  r = np.nan_to_num(risk, nan=0.1)

  # Rhythm: AF rises steeply with age and risk; ectopy mildly with age.
  logit_af = -4.6 + 0.065 * a40 + 0.3 * male + 3.0 * r
  logit_ect = -2.6 + 0.02 * a40
  p_af, p_ect = _sigmoid(logit_af), _sigmoid(logit_ect)
  u = rng.random(n)
  rhythm = np.where(u < p_af, 1, np.where(u < p_af + (1 - p_af) * p_ect, 2, 0))

  hr = 74.0 - 4.0 * male + 0.35 * b27 + 5.0 * smoking + 3.0 * diabetes + 20.0 * r
  hr = hr + rng.normal(0.0, 9.0, n) + np.where(rhythm == 1, rng.normal(14.0, 12.0, n), 0.0)
  hr = np.clip(hr, 42.0, 150.0)
  rsa = 0.045 * np.exp(-a40 / 30.0) + 0.006  # Fractional RR modulation by respiration.

  qrs = 0.086 + 0.008 * male + 0.0003 * a40 + rng.normal(0.0, 0.007, n)
  bbb = rng.random(n) < _sigmoid(-4.2 + 0.04 * a40)
  qrs = np.clip(qrs + bbb * rng.uniform(0.03, 0.06, n), 0.07, 0.17)
  pr = np.clip(0.145 + 0.0009 * a40 + rng.normal(0.0, 0.015, n), 0.10, 0.28)
  qtc = np.clip(
    0.400 + 0.014 * (1.0 - male) + 0.0004 * a40 + 0.12 * r + rng.normal(0.0, 0.014, n), 0.34, 0.56
  )
  r_amp = (
    1.35
    * (1.0 + 0.18 * male)
    * (1.0 + 0.006 * (sbp - 130.0))
    * (27.0 / bmi) ** 0.7
    * (1.0 - 0.004 * a40)
    * np.exp(rng.normal(0.0, 0.2, n))
  )
  t_factor = 0.30 * (1.0 - 2.2 * r) + 0.02 * (1.0 - male) + rng.normal(0.0, 0.05, n)
  st = -0.35 * r * np.clip(r_amp, 0.5, 2.5)  # mV along the R direction: lateral ST depression.
  p_amp = np.clip(rng.normal(0.13, 0.03, n), 0.05, 0.25)

  axis = np.clip(58.0 - 0.5 * a40 - 1.2 * b27 + rng.normal(0.0, 22.0, n), -75.0, 115.0)
  elev = rng.normal(-22.0, 8.0, n)
  u_r = _direction(axis, elev)
  u_t = _direction(axis - 12.0 + rng.normal(0.0, 10.0, n), elev + 30.0)
  u_p = _direction(rng.normal(55.0, 12.0, n), rng.normal(8.0, 8.0, n))
  u_q = _unit(np.array([-0.55, 0.25, 0.8]) + rng.normal(0.0, 0.15, (n, 3)))
  u_s = _unit(np.array([-0.5, -0.6, -0.6]) + rng.normal(0.0, 0.15, (n, 3)))
  u_pvc = _unit(rng.normal(0.0, 1.0, (n, 3)))
  u_f = _unit(np.array([-0.3, 0.5, 0.8]) + rng.normal(0.0, 0.2, (n, 3)))

  return dict(
    sex=male,
    age=age,
    height_in=height_in,
    bmi=bmi,
    weight_lb=weight_lb,
    sbp=sbp,
    dbp=dbp,
    total_chol=total_chol,
    hdl_chol=hdl_chol,
    smoking=smoking,
    diabetes=diabetes,
    risk=risk,
    rhythm=rhythm,
    hr=hr,
    rsa=rsa,
    qrs=qrs,
    pr=pr,
    qtc=qtc,
    r_amp=r_amp,
    t_amp=t_factor * r_amp,
    st=st,
    p_amp=p_amp,
    u_r=u_r,
    u_t=u_t,
    u_p=u_p,
    u_q=u_q,
    u_s=u_s,
    u_pvc=u_pvc,
    u_f=u_f,
    pvc_amp=r_amp * rng.uniform(1.4, 2.4, n),
    pvc_width=rng.uniform(0.13, 0.17, n),
    f_amp=rng.uniform(0.03, 0.10, n),
    f_freq=rng.uniform(4.5, 8.5, n),
    rotation=_rotations(rng, n, 7.0),
    missing_propensity=rng.beta(1.2, 3.0, n),
  )


def risk_high(risk: np.ndarray, age: np.ndarray) -> np.ndarray:
  """ESC 2021 "high or very high" risk: >= 2.5 % (< 50 y), 5 % (50-69 y), 7.5 % (>= 70 y)."""
  threshold = np.where(age < 50, 0.025, np.where(age < 70, 0.05, 0.075))
  return (risk >= threshold).astype(np.int64)


def to_digital(x_mv: np.ndarray) -> np.ndarray:
  """float mV (NaN = missing) -> int16 at `DIGITAL_GAIN`, `schema.INT16_NAN` for NaN."""
  d = np.rint(np.nan_to_num(x_mv, nan=0.0) * DIGITAL_GAIN)
  d = np.clip(d, -32767, 32767).astype(np.int16)
  d[np.isnan(x_mv)] = schema.INT16_NAN
  return d


def split_ranges(num_subjects: int, fractions=(0.8, 0.1, 0.1)) -> dict[str, tuple[int, int]]:
  """Subject-index ranges per split. Subjects are i.i.d. draws, so contiguous ranges are random."""
  n_train = int(round(fractions[0] * num_subjects))
  n_val = int(round(fractions[1] * num_subjects))
  return {
    "train": (0, n_train),
    "validation": (n_train, n_train + n_val),
    "test": (n_train + n_val, num_subjects),
  }


def generate_records(
  *,
  seed: int,
  start: int,
  stop: int,
  records_per_subject: int = 1,
  sampling_rate: float = 500.0,
  duration_s: float = 10.0,
) -> Iterator[dict]:
  """Yields builder-schema examples for subjects `[start, stop)`, record by record.

  Args:
    seed: archive seed.
    start: first subject index.
    stop: one past the last subject index.
    records_per_subject: records per subject (same person, new beats/noise/missingness).
    sampling_rate: Hz.
    duration_s: seconds per record.

  Yields:
    Dicts with the `schema.record_features` keys plus labels `sex`, `age`, `age_band`, `rhythm`,
    `risk` (true SCORE2, never missing; NaN only outside the model's range) and `risk_high`.
  """
  first_block, last_block = start // BLOCK_SUBJECTS, (stop - 1) // BLOCK_SUBJECTS
  for block in range(first_block, last_block + 1):
    lo = block * BLOCK_SUBJECTS
    # Whole blocks are always simulated, so a subject's data do not depend on the range asked.
    subj = simulate_subjects(np.random.default_rng([seed, block, 0]), BLOCK_SUBJECTS)
    keep = np.arange(max(start, lo), min(stop, lo + BLOCK_SUBJECTS)) - lo
    age_band = np.clip((subj["age"] - 40) // 10, 0, len(AGE_BANDS) - 1).astype(np.int64)
    high = risk_high(subj["risk"], subj["age"])
    for r in range(records_per_subject):
      rec = simulate_records(
        subj,
        np.random.default_rng([seed, block, 1 + r]),
        sampling_rate=sampling_rate,
        duration_s=duration_s,
      )
      digital = to_digital(rec["signal"])
      for j in keep:
        subject = lo + int(j)
        yield dict(
          record_id=f"s{subject:07d}_r{r}",
          patient_id=f"p{subject:07d}",
          signal=digital[j],
          gain=np.full(12, DIGITAL_GAIN, np.float32),
          baseline=np.zeros(12, np.float32),
          lead_mask=rec["lead_mask"][j],
          sampling_rate=np.float32(sampling_rate),
          metadata=rec["metadata"][j],
          sex=int(subj["sex"][j]),
          age=np.float32(subj["age"][j]),
          age_band=int(age_band[j]),
          rhythm=int(subj["rhythm"][j]),
          risk=np.float32(subj["risk"][j]),
          risk_high=int(high[j]),
        )
