"""Parsing record-level fields: header comment lines, age, sex, numbers and blood pressure cells
(one parser for every source).

WFDB header comments (`# Age: 78`), metadata CSV cells and TFDS features all go through these, so
"unknown", "nan", "F"/"female", 0/1, "90+" mean the same everywhere.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

# Cell/header values that mean "not recorded" (so they are missing, not unparsable).
MISSING_TOKENS = frozenset({"", "nan", "na", "n/a", "none", "null", "unknown", "?", "-", "nat"})
_CENSORED = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*\+\s*$")  # "90+" -> 90 (a lower bound)
# "sys/dia" blood pressure ("120/80", "120 / 80", "120/80 mmHg").
BLOOD_PRESSURE = re.compile(
  r"^\s*(\d+(?:\.\d+)?)\s*/\s*(\d+(?:\.\d+)?)\s*(?:mm\s*hg)?\s*$", re.IGNORECASE
)


def parse_header_comments(comments: Sequence[str]) -> dict[str, str]:
  """`["Age: 78", "Sex: Male", ...]` -> `{"age": "78", "sex": "Male", ...}` (keys lower-case).

  The first occurrence of a key wins; lines without a colon are ignored.
  """
  out = {}
  for line in comments:
    key, sep, value = str(line).lstrip("#").partition(":")
    key = key.strip().lower()
    if sep and key and key not in out:
      out[key] = value.strip()
  return out


def parse_age(text: str | None) -> tuple[float, bool]:
  """Header age text -> `(years or NaN, parsed_ok)`; explicit "missing" tokens parse as NaN."""
  if text is None or text.strip().lower() in MISSING_TOKENS:
    return math.nan, True
  m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(?:y|yr|yrs|years?)?\s*", text, re.IGNORECASE)
  if not m:
    return math.nan, False
  return float(m.group(1)), True


FEMALE = frozenset({"f", "female", "w", "woman"})
MALE = frozenset({"m", "male", "man"})


def is_missing(value: Any) -> bool:
  """None, NaN, or a `MISSING_TOKENS` string."""
  if value is None:
    return True
  if isinstance(value, str):
    return value.strip().lower() in MISSING_TOKENS
  try:
    return bool(math.isnan(value))
  except (TypeError, ValueError):
    return False


def parse_sex(value: Any) -> tuple[str | None, bool]:
  """A sex cell or header text -> `("F" | "M" | None, parsed_ok)`.

  Accepts "F"/"M", "female"/"male" (also "w"/"woman", "man"; any case, whitespace ignored) and the
  codes 0 = female, 1 = male (numbers, booleans or numeric strings). Missing values (`is_missing`)
  parse as `(None, True)`; anything else is `(None, False)`.
  """
  if is_missing(value):
    return None, True
  if isinstance(value, str):
    t = value.strip().lower()
    if t in FEMALE:
      return "F", True
    if t in MALE:
      return "M", True
  try:
    code = float(value)
  except (TypeError, ValueError):
    return None, False
  if code == 0.0:
    return "F", True
  if code == 1.0:
    return "M", True
  return None, False


def parse_number(value: Any) -> float:
  """A float from a messy cell: numbers, numeric strings, "90+" (-> 90); NaN for anything else.

  Args:
    value: int/float/numpy scalar/str/None.

  Returns:
    float, NaN when missing, unparsable or non-finite.
  """
  if is_missing(value):
    return math.nan
  if isinstance(value, str):
    s = value.strip()
    m = _CENSORED.match(s)
    if m:
      s = m.group(1)
    try:
      out = float(s)
    except ValueError:
      return math.nan
  else:
    try:
      out = float(value)
    except (TypeError, ValueError):
      return math.nan
  return out if math.isfinite(out) else math.nan


def sex_code(value: Any) -> float:
  """Sex code: 1 = male, 0 = female, NaN = missing/unknown/unrecognised (`parse_sex`)."""
  return {"F": 0.0, "M": 1.0}.get(parse_sex(value)[0], math.nan)


def parse_blood_pressure(value: Any) -> tuple[float, float]:
  """(systolic, diastolic) from "sys/dia" strings ("120/80", "120 / 80", "120/80 mmHg").

  Args:
    value: the raw `Blood Pressure` cell.

  Returns:
    Two floats; both NaN when missing or unparsable.
  """
  if is_missing(value) or not isinstance(value, str):
    return math.nan, math.nan
  m = BLOOD_PRESSURE.match(value)
  if not m:
    return math.nan, math.nan
  return float(m.group(1)), float(m.group(2))
