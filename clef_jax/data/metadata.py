"""CLEF's 11-column metadata vector (docs/method.md §D): `rate_meta` and the builders.

The builders produce the `(11,)` float32 vector of `clef_jax.data.schema.METADATA_FIELDS` from a
MIMIC-IV metadata CSV row/frame or from a PhysioNet-style header (age, sex only). Cells are parsed
by `clef_jax.data.parsing`: missing or unparsable ones give NaN, never an exception.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from clef_jax.data import parsing, schema

# rate_meta = fraction of these attributes (metadata columns 0-8) that are present. The paper's A
# (number of attributes) is not recoverable (docs/method.md §C.3); the 9 raw attributes are the
# natural choice, excluding rate_meta itself and the derived score2_risk.
RATE_META_FIELDS: tuple[str, ...] = schema.METADATA_FIELDS[:9]


def rate_meta(values: np.ndarray) -> np.ndarray:
  """Fraction of the 9 attributes (metadata columns 0-8) that are not NaN.

  Args:
    values: `(..., 11)` or `(..., 9)` metadata array.

  Returns:
    float array of shape `values.shape[:-1]`, in [0, 1].
  """
  v = np.asarray(values, np.float64)[..., : len(RATE_META_FIELDS)]
  return np.mean(~np.isnan(v), axis=-1)


def _column(field: str) -> int:
  return schema.METADATA_FIELDS.index(field)


def metadata_from_mimic_row(row: Mapping[str, Any]) -> np.ndarray:
  """The `(11,)` float32 metadata vector of one row of `mimiciv_metadata_with_score2.csv`.

  Columns (order of `schema.METADATA_FIELDS`): `gender` ("F"/"female" -> 0, any other present value ->
  1, missing -> NaN; the official loader maps missing to 1), age (`age_at_ecg`, else
  `anchor_age`; "90+" -> 90), `BMI (kg/m2)`, SBP and DBP from `Blood Pressure` "sys/dia",
  `Height (Inches)`, `Weight (Lbs)`, `heart_rate`, `heart_rate_var`, `rate_meta`, `score2_risk`
  (passed through in the CSV's own scale). Missing or unparsable cells give NaN. If `rate_meta` is
  absent or NaN it is computed as the fraction of columns 0-8 present.

  Args:
    row: a dict or a pandas Series with (a subset of) the CSV's columns.

  Returns:
    `(11,)` float32.
  """
  get = row.get
  out = np.full(schema.NUM_METADATA, np.nan, np.float64)
  g = get("gender")
  if not parsing.is_missing(g):
    out[_column("sex")] = 0.0 if str(g).strip().lower() in parsing.FEMALE else 1.0
  age = parsing.parse_number(get("age_at_ecg"))
  out[_column("age")] = age if not math.isnan(age) else parsing.parse_number(get("anchor_age"))
  out[_column("bmi")] = parsing.parse_number(get("BMI (kg/m2)"))
  out[_column("sbp")], out[_column("dbp")] = parsing.parse_blood_pressure(get("Blood Pressure"))
  out[_column("height_in")] = parsing.parse_number(get("Height (Inches)"))
  out[_column("weight_lb")] = parsing.parse_number(get("Weight (Lbs)"))
  out[_column("heart_rate")] = parsing.parse_number(get("heart_rate"))
  out[_column("heart_rate_var")] = parsing.parse_number(get("heart_rate_var"))
  q = parsing.parse_number(get("rate_meta"))
  out[_column("rate_meta")] = q if not math.isnan(q) else rate_meta(out)
  out[_column("score2_risk")] = parsing.parse_number(get("score2_risk"))
  return out.astype(np.float32)


def _numeric_series(df, name: str) -> np.ndarray:
  """Vectorised `parse_number` over a DataFrame column (all-NaN when the column is absent)."""
  import pandas as pd  # Lazy: pandas only for the frame builder.

  if name not in df.columns:
    return np.full(len(df), np.nan)
  col = df[name]
  if col.dtype.kind in "fiub":
    out = col.to_numpy(np.float64)
  else:
    s = col.astype("string").str.strip().str.replace(r"^(\d+(?:\.\d+)?)\s*\+$", r"\1", regex=True)
    out = pd.to_numeric(s, errors="coerce").to_numpy(np.float64, na_value=np.nan)
  out = out.copy()
  out[~np.isfinite(out)] = np.nan
  return out


def metadata_from_mimic_frame(df) -> np.ndarray:
  """Vectorised `metadata_from_mimic_row` over a DataFrame: `(N, 11)` float32, row for row equal.

  Args:
    df: pandas DataFrame with (a subset of) the metadata CSV's columns.

  Returns:
    `(N, 11)` float32.
  """
  n = len(df)
  out = np.full((n, schema.NUM_METADATA), np.nan, np.float64)
  if "gender" in df.columns:
    g = df["gender"].astype("string").str.strip().str.lower()
    missing = g.isna() | g.isin(list(parsing.MISSING_TOKENS))
    female = g.isin(list(parsing.FEMALE)).fillna(False)
    out[:, _column("sex")] = np.where(
      missing.to_numpy(bool), np.nan, np.where(female.to_numpy(bool), 0.0, 1.0)
    )
  age = _numeric_series(df, "age_at_ecg")
  out[:, _column("age")] = np.where(np.isnan(age), _numeric_series(df, "anchor_age"), age)
  out[:, _column("bmi")] = _numeric_series(df, "BMI (kg/m2)")
  if "Blood Pressure" in df.columns:
    bp = df["Blood Pressure"]
    is_str = bp.map(lambda v: isinstance(v, str)).to_numpy(bool)
    parts = (
      bp.where(is_str)
      .astype("string")
      .str.extract(parsing.BLOOD_PRESSURE.pattern, flags=re.IGNORECASE)
    )
    out[:, _column("sbp")] = parts[0].astype(float).to_numpy(np.float64, na_value=np.nan)
    out[:, _column("dbp")] = parts[1].astype(float).to_numpy(np.float64, na_value=np.nan)
  out[:, _column("height_in")] = _numeric_series(df, "Height (Inches)")
  out[:, _column("weight_lb")] = _numeric_series(df, "Weight (Lbs)")
  out[:, _column("heart_rate")] = _numeric_series(df, "heart_rate")
  out[:, _column("heart_rate_var")] = _numeric_series(df, "heart_rate_var")
  q = _numeric_series(df, "rate_meta")
  out[:, _column("rate_meta")] = np.where(np.isnan(q), rate_meta(out), q)
  out[:, _column("score2_risk")] = _numeric_series(df, "score2_risk")
  return out.astype(np.float32)


def metadata_from_header(*, age: Any, sex: Any) -> np.ndarray:
  """The `(11,)` float32 metadata vector from a PhysioNet-style header (`# Age:`, `# Sex:`).

  Only sex and age are known; the other attributes are NaN, `rate_meta` is the fraction of the 9
  attributes present (at most 2/9) and `score2_risk` is NaN.

  Args:
    age: years; number or string ("54", "90+" -> 90, "NaN"/"" -> NaN).
    sex: "Male"/"M"/1 -> 1, "Female"/"F"/0 -> 0, "NaN"/"Unknown"/"" -> NaN.

  Returns:
    `(11,)` float32.
  """
  out = np.full(schema.NUM_METADATA, np.nan, np.float64)
  out[_column("sex")] = parsing.sex_code(sex)
  out[_column("age")] = parsing.parse_number(age)
  out[_column("rate_meta")] = rate_meta(out)
  return out.astype(np.float32)
