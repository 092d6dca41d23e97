"""SCORE2 / SCORE2-OP 10-year cardiovascular risk.

SCORE2 (ESC 2021, ages 40-69) and SCORE2-OP (ages >= 70) follow docs/method.md §H with the coefficients of
the SCORE2 authors' Stata implementation (`score2risk.ado`, `score2oprisk.ado`): SCORE2's
published 4-dp log hazard ratios, the 6-dp recalibration scales, and SCORE2-OP's full-precision
betas. Everything is vectorised numpy and never raises on bad *data*: out-of-range or missing inputs
give NaN plus a reason string (`score2_with_reason`), so one odd row cannot stop a dataset build.
Cells are parsed by `clef_jax.data.parsing`; the metadata vector that carries the risk is
`clef_jax.data.metadata`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from clef_jax.data import parsing

# ------------------------------------------------------------------------------------------------
# Coefficients (docs/method.md §H.1, §H.2).
# ------------------------------------------------------------------------------------------------
# SCORE2 terms: cage=(age-60)/5, csbp=(sbp-120)/20, ctchol=tc-6, chdl=(hdl-1.3)/0.5.
_SCORE2 = {
  "male": dict(
    cage=0.3742,
    smoking=0.6012,
    csbp=0.2777,
    diabetes=0.6457,
    ctchol=0.1458,
    chdl=-0.2698,
    smoking_cage=-0.0755,
    csbp_cage=-0.0255,
    diabetes_cage=-0.0983,
    ctchol_cage=-0.0281,
    chdl_cage=0.0426,
    mean_lp=0.0,
    s0=0.9605,
  ),
  "female": dict(
    cage=0.4648,
    smoking=0.7744,
    csbp=0.3131,
    diabetes=0.8096,
    ctchol=0.1002,
    chdl=-0.2606,
    smoking_cage=-0.1088,
    csbp_cage=-0.0277,
    diabetes_cage=-0.1272,
    ctchol_cage=-0.0226,
    chdl_cage=0.0613,
    mean_lp=0.0,
    s0=0.9776,
  ),
}
# SCORE2-OP terms (unscaled): cage=age-73, csbp=sbp-150, ctchol=tc-6, chdl=hdl-1.4.
_SCORE2_OP = {
  "male": dict(
    cage=0.0633767915,
    smoking=0.3523957899,
    csbp=0.0094362177,
    diabetes=0.4245248910,
    ctchol=0.0849594156,
    chdl=-0.3563571842,
    smoking_cage=-0.0247205945,
    csbp_cage=-0.0004794522,
    diabetes_cage=-0.0173654217,
    ctchol_cage=0.0073336663,
    chdl_cage=0.0091317857,
    mean_lp=0.09285225,
    s0=1.0 - 0.24235298,
  ),
  "female": dict(
    cage=0.0789191229,
    smoking=0.4921147010,
    csbp=0.0101993091,
    diabetes=0.6009874438,
    ctchol=0.0604939598,
    chdl=-0.3040280248,
    smoking_cage=-0.0255496313,
    csbp_cage=-0.0004404728,
    diabetes_cage=-0.0106909701,
    ctchol_cage=-0.0009121461,
    chdl_cage=0.0153779923,
    mean_lp=0.2287676,
    s0=1.0 - 0.19178759,
  ),
}
# Regional recalibration (scale1, scale2): risk = 1 - exp(-exp(s1 + s2 ln(-ln(1 - p0)))).
REGIONS = ("low", "moderate", "high", "very high")
_SCALES = {
  "SCORE2": {
    "male": {
      "low": (-0.569857, 0.747593),
      "moderate": (-0.156481, 0.800869),
      "high": (0.320717, 0.936004),
      "very high": (0.583578, 0.829368),
    },
    "female": {
      "low": (-0.737966, 0.701868),
      "moderate": (-0.314269, 0.770149),
      "high": (0.570963, 0.936893),
      "very high": (0.941177, 0.832923),
    },
  },
  "SCORE2-OP": {
    "male": {
      "low": (-0.343484, 1.193038),
      "moderate": (0.005320, 1.248514),
      "high": (0.084305, 1.151902),
      "very high": (0.045959, 0.703625),
    },
    "female": {
      "low": (-0.516054, 1.007238),
      "moderate": (-0.101044, 1.099621),
      "high": (0.375720, 1.089031),
      "very high": (0.379293, 0.691530),
    },
  },
}

MG_DL_TO_MMOL_L = 0.02586  # cholesterol, mg/dL -> mmol/L (docs/method.md §H.1)

# Inputs outside these closed ranges give NaN with a reason (after unit conversion). Age: SCORE2 is
# defined from 40, SCORE2-OP is validated to 89 (MIMIC codes > 89 as 91). The others are generous
# physiological bounds, wider than the ESC charts (SBP 100-179, TC 3-6.9 mmol/L), meant to reject
# unit mix-ups and typos, not to restrict the model.
VALID_RANGES: dict[str, tuple[float, float]] = {
  "age": (40.0, 90.0),  # years; the upper bound is exclusive
  "sbp": (60.0, 260.0),  # mmHg
  "total_chol": (1.0, 20.0),  # mmol/L
  "hdl_chol": (0.2, 5.0),  # mmol/L
}
OP_MIN_AGE = 70.0  # SCORE2 below, SCORE2-OP from here on


def _region_key(region: Any) -> str | None:
  if not isinstance(region, str):
    return None
  key = region.strip().lower().replace("_", " ").replace("-", " ")
  key = " ".join(key.split())
  if key == "veryhigh":
    key = "very high"
  return key if key in REGIONS else None


# ------------------------------------------------------------------------------------------------
# SCORE2 / SCORE2-OP.
# ------------------------------------------------------------------------------------------------
def _as_float_array(value: Any) -> np.ndarray:
  """Numeric array with NaN for missing/unparsable entries (strings allowed)."""
  arr = np.asarray(value, dtype=object) if not isinstance(value, np.ndarray) else value
  if arr.dtype.kind in "fiub":
    out = arr.astype(np.float64)
    out[~np.isfinite(out)] = np.nan
    return out
  return (
    np.vectorize(parsing.parse_number, otypes=[np.float64])(arr) if arr.size else arr.astype(float)
  )


def _as_sex_array(value: Any) -> np.ndarray:
  arr = np.asarray(value, dtype=object)
  return np.vectorize(parsing.sex_code, otypes=[np.float64])(arr) if arr.size else arr.astype(float)


def _as_binary_array(value: Any) -> tuple[np.ndarray, np.ndarray]:
  """(0/1 float array with NaN where missing, mask of present-but-not-0/1 entries)."""
  x = _as_float_array(value)
  invalid = np.isfinite(x) & (x != 0) & (x != 1)
  return np.where(invalid, np.nan, x), invalid


def score2_components(
  *,
  sex: Any,
  age: Any,
  smoking: Any,
  sbp: Any,
  total_chol: Any,
  hdl_chol: Any,
  diabetes: Any,
  region: Any = "moderate",
  chol_unit: str = "mmol/L",
) -> dict[str, np.ndarray]:
  """SCORE2 (40 <= age < 70) / SCORE2-OP (age >= 70) with intermediate values and reasons.

  All inputs broadcast against each other. Missing entries may be NaN/None/"".

  Args:
    sex: 1 / "M" / "male" for men, 0 / "F" / "female" for women (case-insensitive).
    age: years; in [40, 90) (SCORE2-OP from 70).
    smoking: current smoker, 0/1 (bool ok).
    sbp: systolic blood pressure, mmHg; in [60, 260].
    total_chol: total cholesterol in `chol_unit`; [1, 20] mmol/L after conversion.
    hdl_chol: HDL cholesterol in `chol_unit`; [0.2, 5] mmol/L after conversion.
    diabetes: history of diabetes, 0/1.
    region: ESC risk region, "low" | "moderate" | "high" | "very high" ("very_high" accepted);
      a scalar or an array broadcasting with the others.
    chol_unit: "mmol/L" or "mg/dL" (x 0.02586).

  Returns:
    Dict of float64 arrays of the broadcast shape: `lp` (linear predictor, SCORE2-OP's with its
    mean subtracted), `uncalibrated` (1 - S0^exp(lp)), `risk` (the regional 10-year risk as a
    fraction); `model` ("SCORE2" / "SCORE2-OP" / "") and `reason` ("" when valid, else why NaN)
    as object arrays.

  Raises:
    ValueError: only for a bad `chol_unit` or a bad scalar `region` (caller errors, not data).
  """
  unit = chol_unit.strip().lower().replace(" ", "")
  if unit not in ("mmol/l", "mg/dl"):
    raise ValueError(f"chol_unit must be 'mmol/L' or 'mg/dL'; got {chol_unit!r}.")
  if isinstance(region, str) and _region_key(region) is None:
    raise ValueError(f"region must be one of {REGIONS}; got {region!r}.")
  conv = MG_DL_TO_MMOL_L if unit == "mg/dl" else 1.0

  sex_a = _as_sex_array(sex)
  age_a = _as_float_array(age)
  smk, smk_bad = _as_binary_array(smoking)
  sbp_a = _as_float_array(sbp)
  tc = _as_float_array(total_chol) * conv
  hdl = _as_float_array(hdl_chol) * conv
  dm, dm_bad = _as_binary_array(diabetes)
  reg = np.asarray(region, dtype=object)
  reg = np.vectorize(lambda r: _region_key(r) or "", otypes=[object])(reg)
  (sex_a, age_a, smk, smk_bad, sbp_a, tc, hdl, dm, dm_bad, reg) = np.broadcast_arrays(
    sex_a, age_a, smk, smk_bad, sbp_a, tc, hdl, dm, dm_bad, reg
  )
  shape = sex_a.shape

  # Reasons, first failing check wins (missing inputs first, then invalid codes, then ranges).
  reason = np.full(shape, "", dtype=object)

  def flag(cond, text):
    reason[(reason == "") & cond] = text

  flag(reg == "", "invalid region")
  raw_sex = np.broadcast_to(np.asarray(sex, dtype=object), shape)
  sex_missing = (
    np.vectorize(parsing.is_missing, otypes=[bool])(raw_sex) if raw_sex.size else raw_sex
  )
  flag(sex_missing, "missing sex")
  flag(np.isnan(sex_a), "invalid sex")
  for name, arr in (
    ("age", age_a),
    ("smoking", smk),
    ("sbp", sbp_a),
    ("total_chol", tc),
    ("hdl_chol", hdl),
    ("diabetes", dm),
  ):
    if name == "smoking":
      flag(smk_bad, "invalid smoking (not 0/1)")
    if name == "diabetes":
      flag(dm_bad, "invalid diabetes (not 0/1)")
    flag(np.isnan(arr), f"missing {name}")
  for name, arr in (("age", age_a), ("sbp", sbp_a), ("total_chol", tc), ("hdl_chol", hdl)):
    lo, hi = VALID_RANGES[name]
    unit_txt = {"age": "", "sbp": " mmHg"}.get(name, " mmol/L")
    flag(arr < lo, f"{name} < {lo:g}{unit_txt}")
    if name == "age":
      flag(arr >= hi, f"age >= {hi:g}")
    else:
      flag(arr > hi, f"{name} > {hi:g}{unit_txt}")
  ok = reason == ""

  op = age_a >= OP_MIN_AGE
  male = sex_a == 1.0
  lp = np.full(shape, np.nan)
  p0 = np.full(shape, np.nan)
  risk = np.full(shape, np.nan)
  model = np.where(ok, np.where(op, "SCORE2-OP", "SCORE2"), "").astype(object)
  with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
    for is_op, table in ((False, _SCORE2), (True, _SCORE2_OP)):
      for sex_name, is_male in (("male", True), ("female", False)):
        sel = ok & (op == is_op) & (male == is_male)
        if not sel.any():
          continue
        c = table[sex_name]
        if is_op:
          cage, csbp, ctc, chdl = age_a - 73.0, sbp_a - 150.0, tc - 6.0, hdl - 1.4
        else:
          cage, csbp, ctc, chdl = (
            (age_a - 60.0) / 5.0,
            (sbp_a - 120.0) / 20.0,
            tc - 6.0,
            (hdl - 1.3) / 0.5,
          )
        x = (
          c["cage"] * cage
          + c["smoking"] * smk
          + c["csbp"] * csbp
          + c["diabetes"] * dm
          + c["ctchol"] * ctc
          + c["chdl"] * chdl
          + cage
          * (
            c["smoking_cage"] * smk
            + c["csbp_cage"] * csbp
            + c["diabetes_cage"] * dm
            + c["ctchol_cage"] * ctc
            + c["chdl_cage"] * chdl
          )
          - c["mean_lp"]
        )
        uncal = 1.0 - np.power(c["s0"], np.exp(x))
        scales = _SCALES["SCORE2-OP" if is_op else "SCORE2"][sex_name]
        s1 = np.vectorize(lambda r, t=scales: t.get(r, (np.nan, np.nan))[0], otypes=[float])(reg)
        s2 = np.vectorize(lambda r, t=scales: t.get(r, (np.nan, np.nan))[1], otypes=[float])(reg)
        cal = 1.0 - np.exp(-np.exp(s1 + s2 * np.log(-np.log1p(-uncal))))
        lp[sel], p0[sel], risk[sel] = x[sel], uncal[sel], cal[sel]
  return {"lp": lp, "uncalibrated": p0, "risk": risk, "model": model, "reason": reason}


def score2_with_reason(**kwargs: Any) -> tuple[np.ndarray, np.ndarray]:
  """`(risk, reason)`: the 10-year risk (fraction) and, per element, "" or why it is NaN.

  Takes the keyword arguments of `score2_components`. Reasons look like "age < 40",
  "age >= 90", "missing sbp", "invalid sex", "total_chol > 20 mmol/L".

  Args:
    **kwargs: sex, age, smoking, sbp, total_chol, hdl_chol, diabetes, region, chol_unit.

  Returns:
    `(risk, reason)`: float64 array and object array of str, both of the broadcast shape.
  """
  out = score2_components(**kwargs)
  return out["risk"], out["reason"]


def score2(
  *,
  sex: Any,
  age: Any,
  smoking: Any,
  sbp: Any,
  total_chol: Any,
  hdl_chol: Any,
  diabetes: Any,
  region: Any = "moderate",
  chol_unit: str = "mmol/L",
) -> np.ndarray:
  """10-year CVD risk as a fraction: SCORE2 for ages 40-69, SCORE2-OP for ages >= 70.

  Vectorised over broadcastable inputs; NaN (never an exception) for missing or out-of-range data;
  use `score2_with_reason` for why.

  Args:
    sex: 1 / "M" / "male" = male, 0 / "F" / "female" = female.
    age: years, valid in [40, 90).
    smoking: current smoker 0/1.
    sbp: systolic BP in mmHg, valid in [60, 260].
    total_chol: total cholesterol in `chol_unit`.
    hdl_chol: HDL cholesterol in `chol_unit`.
    diabetes: diabetes 0/1.
    region: "low" | "moderate" | "high" | "very high" (ESC 2021 risk regions).
    chol_unit: "mmol/L" (default) or "mg/dL".

  Returns:
    float64 array of the broadcast shape (0-d for scalar inputs).
  """
  return score2_components(
    sex=sex,
    age=age,
    smoking=smoking,
    sbp=sbp,
    total_chol=total_chol,
    hdl_chol=hdl_chol,
    diabetes=diabetes,
    region=region,
    chol_unit=chol_unit,
  )["risk"]
