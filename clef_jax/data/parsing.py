"""Parsing record-level fields: header comment lines, age, sex (one parser for every source).

WFDB header comments (`# Age: 78`), metadata CSV cells and TFDS features all go through these, so
"unknown", "nan", "F"/"female", 0/1 mean the same everywhere.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

# Cell/header values that mean "not recorded" (so they are missing, not unparsable).
MISSING_TOKENS = frozenset({"", "nan", "na", "n/a", "none", "null", "unknown", "?", "-", "nat"})


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
