"""What every reader shares: the `Recording` handle, input errors, channel choice and units.

A reader turns one file (or one WFDB record) into a `Recording`: one channel, its native sampling
rate and length, and `read(start, stop)` returning that range in mV (float64, NaN = missing).
Nothing is read until `read` is called, so a 24-hour Holter is read one bounded chunk at a time.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
import re
from collections.abc import Callable, Sequence

import numpy as np

from clef_jax.data import schema

# Sampling rates outside (0, MAX_FS] are refused: no ECG recorder samples above 20 kHz, and such a
# value is almost always a header typo (a sample count or a period in the rate field).
MAX_FS = 20_000.0


class InputError(ValueError):
  """A file that cannot be embedded; the message is one line naming the file and the fix."""

  def __init__(self, message: str, reason: str = "unreadable"):
    super().__init__(message)
    self.reason = reason


# ------------------------------------------------------------------------------------------------
# Units.
# ------------------------------------------------------------------------------------------------
# Spellings of the physical units seen in ECG files, -> factor to mV. EDF writes "uV" (ASCII),
# WFDB "uV" or "mV", Apple Health "µV" (micro sign) or "μV" (Greek mu).
UNIT_TO_MV: dict[str, float] = {
  "mv": 1.0,
  "millivolt": 1.0,
  "millivolts": 1.0,
  "uv": 1e-3,
  "µv": 1e-3,
  "μv": 1e-3,
  "microvolt": 1e-3,
  "microvolts": 1e-3,
  "v": 1e3,
  "volt": 1e3,
  "volts": 1e3,
  "nv": 1e-6,
}


def unit_scale(unit: str | None, *, where: str) -> float:
  """Factor turning values in `unit` into mV; InputError naming `where` when it is unknown."""
  key = (unit or "").strip().lower()
  if key not in UNIT_TO_MV:
    raise InputError(
      f"{where}: unknown signal unit {unit!r}; pass --unit (uV, mV or V) if you know it.",
      "unknown_unit",
    )
  return UNIT_TO_MV[key]


def check_fs(fs: float | None, *, where: str, fix: str = "fix the file's header") -> float:
  """A usable sampling rate in Hz, or InputError naming `where` and ending in `fix`."""
  fix = "" if where.startswith("--") else f"; {fix}"  # A flag's own message needs no fix.
  try:
    fs = float(fs)  # type: ignore[arg-type]
  except (TypeError, ValueError):
    raise InputError(
      f"{where}: sampling rate {fs!r} is not a number{fix}.", "bad_sampling_rate"
    ) from None
  if not math.isfinite(fs) or fs <= 0 or fs > MAX_FS:
    raise InputError(
      f"{where}: sampling rate {fs:g} Hz is not usable (need 0 < fs <= {MAX_FS:g}){fix}.",
      "bad_sampling_rate",
    )
  return fs


# ------------------------------------------------------------------------------------------------
# Channel names.
# ------------------------------------------------------------------------------------------------
# Names that stand for a standard lead, after `_normalise` (upper case; "LEAD", "ECG", "EKG"
# prefixes and separators dropped). Standard lead names themselves are matched directly.
#   MLI/MLII/MLIII, ML2: the modified limb leads of ambulatory (Holter) recordings, e.g. MIT-BIH.
#   DI/DII/DIII, D1-D3: the European names of the limb leads.
#   1/2/3 only after "Lead" ("Lead 2"): "ECG1", "ECG2" of a Holter are channel numbers, not leads.
LEAD_ALIASES: dict[str, str] = {
  "MLI": "I",
  "ML1": "I",
  "MLII": "II",
  "ML2": "II",
  "MLIII": "III",
  "ML3": "III",
  "DI": "I",
  "D1": "I",
  "DII": "II",
  "D2": "II",
  "DIII": "III",
  "D3": "III",
  "AVR": "aVR",
  "AVL": "aVL",
  "AVF": "aVF",
}
_LEAD_NUMBERS = {"1": "I", "2": "II", "3": "III"}
_PREFIX = re.compile(r"^(?:LEAD|ECG|EKG)+")


def _normalise(name: str) -> tuple[str, str]:
  """`(upper-case name without separators and ECG/Lead prefixes, the prefix cut)`."""
  key = re.sub(r"[\s_\-.:/()]+", "", str(name)).upper()
  cut = _PREFIX.sub("", key)
  return cut, key[: len(key) - len(cut)]


def standard_lead(name: str) -> str | None:
  """The standard lead (`schema.LEAD_ORDER` spelling) a channel name stands for, or None.

  >>> standard_lead("MLII"), standard_lead("Lead I"), standard_lead("ECG1"), standard_lead("V5")
  ('II', 'I', None, 'V5')
  """
  key, prefix = _normalise(name)
  if key in schema.LEAD_INDEX:
    return schema.LEAD_ORDER[schema.LEAD_INDEX[key]]
  if key in LEAD_ALIASES:
    return LEAD_ALIASES[key]
  if "LEAD" in prefix and key in _LEAD_NUMBERS:
    return _LEAD_NUMBERS[key]
  return None


def check_lead(lead: str | None) -> str | None:
  """A requested `--lead` in `schema.LEAD_ORDER` spelling (aliases accepted), or InputError."""
  if lead is None:
    return None
  std = standard_lead(lead)
  if std is None:
    raise InputError(
      f"--lead {lead!r} is not a standard lead ({', '.join(schema.LEAD_ORDER)}); to "
      "pick a channel by the file's own name use --channel.",
      "bad_argument",
    )
  return std


@dataclasses.dataclass(frozen=True)
class Choice:
  """The channel picked in a file: its position, the file's name for it, its standard lead."""

  index: int
  name: str
  lead: str | None
  note: str | None = None  # A log line when an alias or a default decided the choice.


def choose_channel(
  names: Sequence[str], *, where: str, lead: str | None = None, channel: str | int | None = None
) -> Choice:
  """Picks one channel of a file.

  Args:
    names: the file's channel names, in file order.
    where: the file, for messages.
    lead: a standard lead (`check_lead` spelling): the channel whose name is that lead or one of
      its aliases (`LEAD_ALIASES`).
    channel: the file's own channel name (case-insensitive) or a 0-based index (int, or a string
      of digits that is not also a channel name).
    With neither, lead I (the released models' lead) if the file has it, else the only channel.

  Returns:
    The `Choice`; `note` says when an alias or a default was applied.

  Raises:
    InputError: nothing matches, or several channels match a lead.
  """
  listing = ", ".join(repr(str(n)) for n in names) or "none"
  if channel is not None:
    text = str(channel).strip()
    exact = [i for i, n in enumerate(names) if str(n).strip().lower() == text.lower()]
    if exact:
      i = exact[0]
    elif text.lstrip("-").isdigit():
      i = int(text)
      if not 0 <= i < len(names):
        raise InputError(
          f"{where}: channel index {i} out of range (channels: {listing}).", "no_such_channel"
        )
    else:
      raise InputError(f"{where}: no channel {text!r} (channels: {listing}).", "no_such_channel")
    std = standard_lead(names[i])
    if lead is not None and std is not None and std != lead:
      raise InputError(
        f"{where}: channel {names[i]!r} is lead {std}, not the --lead {lead} "
        "asked for; drop one of --lead/--channel.",
        "bad_argument",
      )
    return Choice(i, str(names[i]), std or lead)
  leads = [standard_lead(n) for n in names]
  if lead is None:
    if "I" in leads:
      lead = "I"
    elif len(names) == 1:
      note = None if leads[0] else f"{where}: using its only channel {names[0]!r}"
      return Choice(0, str(names[0]), leads[0], note)
    else:
      raise InputError(
        f"{where}: no lead I and several channels ({listing}); pick one with --lead or --channel.",
        "no_such_channel",
      )
  hits = [i for i, s in enumerate(leads) if s == lead]
  if not hits:
    raise InputError(
      f"{where}: no lead {lead} (channels: {listing}); pick one with --channel "
      "NAME or --channel INDEX.",
      "no_such_channel",
    )
  if len(hits) > 1:
    raise InputError(
      f"{where}: several channels are lead {lead} "
      f"({', '.join(repr(str(names[i])) for i in hits)}); pick one with --channel.",
      "no_such_channel",
    )
  i = hits[0]
  name = str(names[i])
  note = None if name == lead else f"{where}: channel {name!r} read as lead {lead}"
  return Choice(i, name, lead, note)


# ------------------------------------------------------------------------------------------------
# The handle readers return.
# ------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Recording:
  """One channel of one recording, read lazily.

  Attributes:
    id: the record id in outputs (relative to the input root, or a row number of an array).
    path: the file (or WFDB record path without extension).
    channel: the file's own name for the channel.
    lead: the standard lead it stands for (None when unknown, e.g. a plain CSV column).
    fs: native sampling rate, Hz.
    n_samples: native length in samples.
    notes: log lines about choices made while opening (alias applied, unit assumed).
    comments: the file's free-text header comments (WFDB `#` lines; [] for other kinds).
  """

  id: str
  path: pathlib.Path
  channel: str
  lead: str | None
  fs: float
  n_samples: int
  reader: Callable[[int, int], np.ndarray]
  notes: list[str] = dataclasses.field(default_factory=list)
  comments: list[str] = dataclasses.field(default_factory=list)
  closer: Callable[[], None] | None = None

  @property
  def duration_s(self) -> float:
    return self.n_samples / self.fs

  def read(self, start: int, stop: int) -> np.ndarray:
    """Samples `[start, stop)` (clipped to the recording) in mV, float64, NaN = missing."""
    start, stop = max(0, int(start)), min(self.n_samples, int(stop))
    if stop <= start:
      return np.zeros(0, np.float64)
    x = np.asarray(self.reader(start, stop), np.float64).reshape(-1)
    if x.shape[0] != stop - start:
      raise InputError(
        f"{self.path}: read {x.shape[0]} samples where {stop - start} were "
        "expected (file shorter than its header says?).",
        "truncated",
      )
    return x

  def __enter__(self) -> Recording:
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def close(self) -> None:
    """Releases the file (EDF files stay open between reads; EDFlib opens a file once)."""
    if self.closer is not None:
      self.closer()
      self.closer = None
