"""Diagnosis codes: SNOMED CT codes of the PhysioNet/CinC Challenge `# Dx:` header line.

The Challenge headers list diagnoses as SNOMED CT codes (`164889003`), but CPSC-2018 records and
some exports write abbreviations (`AF`, `I-AVB`). `snomed_dx_map.csv` (shipped with this package:
snomed_code, dx_name, abbreviation, scored) is the Challenge's mapping table; `DX_ALIASES` adds the
CPSC spellings that differ from it. The Challenge-format builders store `header_fields`'
codes; the evaluation reads them back the same way from WFDB headers and names classes with
`dx_names`.
"""

from __future__ import annotations

import csv
import functools
import pathlib
from collections.abc import Sequence

from clef_jax import build_report as br
from clef_jax.data import parsing

DX_TABLE = pathlib.Path(__file__).with_name("snomed_dx_map.csv")

# CPSC-2018 labels that differ from the abbreviations in `snomed_dx_map.csv`; the rest (AF, LBBB,
# PAC, PVC, RBBB, STD, STE, ...) are looked up there, case-insensitively.
DX_ALIASES = {
  "I-AVB": 270492004,  # 1st degree AV block (IAVB)
  "NORMAL": 426783006,  # sinus rhythm (NSR)
}


@functools.cache
def _rows() -> tuple[dict[str, str], ...]:
  with DX_TABLE.open(newline="") as f:
    return tuple(csv.DictReader(f))


def dx_table() -> list[dict[str, str]]:
  """Rows of `snomed_dx_map.csv` (snomed_code, dx_name, abbreviation, scored)."""
  return [dict(row) for row in _rows()]


def dx_abbreviations() -> dict[str, int]:
  """Upper-case abbreviation -> SNOMED CT code (the table plus `DX_ALIASES`)."""
  table = {row["abbreviation"].upper(): int(row["snomed_code"]) for row in _rows()}
  table.update(DX_ALIASES)
  return table


def dx_names() -> dict[int, str]:
  """SNOMED CT code -> its abbreviation (display names of Dx classes)."""
  return {int(row["snomed_code"]): row["abbreviation"] for row in _rows()}


def parse_dx(
  text: str | None, abbreviations: dict[str, int] | None = None
) -> tuple[list[int], list[str]]:
  """`"164889003,AF, X"` -> `([164889003, 164889003], ["X"])`: codes and unmappable entries.

  Args:
    text: the header's Dx value (comma-separated codes or abbreviations).
    abbreviations: `dx_abbreviations()` (pass it when parsing many headers); None reads it.
  """
  codes, unknown = [], []
  for token in (text or "").split(","):
    token = token.strip()
    if not token or token.lower() in ("unknown", "nan"):
      continue
    if token.isdigit():
      codes.append(int(token))
      continue
    if abbreviations is None:
      abbreviations = dx_abbreviations()
    if token.upper() in abbreviations:
      codes.append(abbreviations[token.upper()])
    else:
      unknown.append(token)
  return codes, unknown


def dx_codes(text: str | None) -> list[int]:
  """`parse_dx`'s codes, dropping unmappable entries (how evaluation reads WFDB headers)."""
  return parse_dx(text)[0]


def header_fields(
  comments: Sequence[str],
  record_id: str,
  report: br.BuildReport,
  abbreviations: dict[str, int] | None = None,
) -> tuple[float, str | None, list[int]]:
  """`(age or NaN, "F"/"M"/None, SNOMED codes)` from `# Age:`, `# Sex:`, `# Dx:` comments.

  What the Challenge-format builders store. Unparsable age/sex are flagged `metadata_unparsable`
  in `report`, unmappable Dx entries `unknown_label`.

  Args:
    comments: the header's comment lines.
    record_id: the record's id in the report.
    report: the build report.
    abbreviations: `dx_abbreviations()` (None reads it; `{}` accepts numeric codes only).
  """
  fields = parsing.parse_header_comments(comments)
  age, age_ok = parsing.parse_age(fields.get("age"))
  sex, sex_ok = parsing.parse_sex(fields.get("sex"))
  if not (age_ok and sex_ok):
    report.flagged(
      br.METADATA_UNPARSABLE, record_id, f"age={fields.get('age')!r} sex={fields.get('sex')!r}"
    )
  dx, unknown = parse_dx(fields.get("dx"), abbreviations)
  if unknown:
    report.flagged(br.UNKNOWN_LABEL, record_id, ",".join(unknown))
  return age, sex, dx
