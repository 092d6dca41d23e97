"""ECG facts in one place: lead names and order, sampling rate, the on-disk record schema.

Every builder stores 12-lead records in `LEAD_ORDER` (the standard clinical order, which is *not*
MIMIC-IV-ECG's header order: MIMIC has aVF before aVL). Signals are stored losslessly as int16
digital values plus a per-lead gain and baseline, exactly as WFDB does:

    physical_mV = (digital - baseline) / gain,   digital == INT16_NAN  ->  NaN

Leads a record lacks are all `INT16_NAN` with `lead_mask == False`; a lead that is present but
unusable in a stored window (all NaN, or flat) keeps its samples and has `lead_mask == False` too.
Reading WFDB records into this schema is `clef_jax.data.wfdb_io`; cutting them into stored windows
is `clef_jax.data.windows`.
"""

from __future__ import annotations

import numpy as np

# Canonical 12-lead order used by every built dataset and by the models' 12-channel input.
LEAD_ORDER: tuple[str, ...] = (
  "I",
  "II",
  "III",
  "aVR",
  "aVL",
  "aVF",
  "V1",
  "V2",
  "V3",
  "V4",
  "V5",
  "V6",
)
NUM_LEADS = len(LEAD_ORDER)
LEAD_INDEX: dict[str, int] = {name.upper(): i for i, name in enumerate(LEAD_ORDER)}

# The models' input contract (docs/method.md §I): 500 Hz, 10 s windows. The one definition of the
# 500 Hz rate: `preprocess.OFFICIAL_FS` and every default sampling rate refer to it.
SAMPLING_RATE = 500
WINDOW_SECONDS = 10
WINDOW_SAMPLES = SAMPLING_RATE * WINDOW_SECONDS

# WFDB's "missing sample" value for 16-bit formats; used as the NaN sentinel on disk.
INT16_NAN = -32768

# The 11-vector of per-record metadata (docs/method.md §D); NaN marks a missing value.
METADATA_FIELDS: tuple[str, ...] = (
  "sex",  # 0: F -> 0, otherwise 1
  "age",  # 1: years
  "bmi",  # 2: kg/m2
  "sbp",  # 3: systolic BP, mmHg
  "dbp",  # 4: diastolic BP, mmHg
  "height_in",  # 5: inches
  "weight_lb",  # 6: pounds
  "heart_rate",  # 7: bpm
  "heart_rate_var",  # 8
  "rate_meta",  # 9: fraction of metadata attributes available
  "score2_risk",  # 10: SCORE2 / SCORE2-OP 10-year risk
)
NUM_METADATA = len(METADATA_FIELDS)
RATE_META_INDEX = METADATA_FIELDS.index("rate_meta")
RISK_INDEX = METADATA_FIELDS.index("score2_risk")


def lead_index(name: str) -> int:
  """Index of a lead in `LEAD_ORDER`, matching names case-insensitively (`AVR` == `aVR`)."""
  try:
    return LEAD_INDEX[name.strip().upper()]
  except KeyError:
    raise KeyError(f"Unknown lead name {name!r}; expected one of {LEAD_ORDER}.") from None


def to_physical(digital: np.ndarray, gain: np.ndarray, baseline: np.ndarray) -> np.ndarray:
  """int16 digital `(T, 12)` -> float32 mV with NaN where the sentinel is stored."""
  x = (digital.astype(np.float32) - baseline.astype(np.float32)) / gain.astype(np.float32)
  x[digital == INT16_NAN] = np.nan
  return x


def record_features(*, signal_encoding: str = "bytes", **extra):
  """The TFDS feature dict every ECG builder shares, plus dataset-specific `extra` features.

  - `record_id`, `patient_id`: text (splits are patient-level).
  - `signal`: `(T, 12)` int16 digital values in `LEAD_ORDER`, `INT16_NAN` = missing.
  - `gain`, `baseline`: `(12,)` float32, physical = (digital - baseline) / gain (mV).
  - `lead_mask`: `(12,)` bool, False for leads the record lacks or that are all NaN / flat.
  - `sampling_rate`: float32 Hz of the stored signal.
  - `metadata`: `(11,)` float32 vector of `METADATA_FIELDS`, NaN = missing.

  `signal_encoding`: "bytes" (default: raw int16; the ArrayRecord writer already compresses each
  record, so an extra zlib layer only costs time — measured 2 % *larger* on disk, 3x slower to
  build and 2.7x slower to decode) or "zlib".
  """
  import tensorflow_datasets as tfds  # Lazy: heavy import.

  encodings = {"bytes": tfds.features.Encoding.BYTES, "zlib": tfds.features.Encoding.ZLIB}
  if signal_encoding not in encodings:
    raise ValueError(
      f"signal_encoding must be one of {sorted(encodings)}; got {signal_encoding!r}."
    )

  features = {
    "record_id": tfds.features.Text(),
    "patient_id": tfds.features.Text(),
    "signal": tfds.features.Tensor(
      shape=(None, NUM_LEADS), dtype=np.int16, encoding=encodings[signal_encoding]
    ),
    "gain": tfds.features.Tensor(shape=(NUM_LEADS,), dtype=np.float32),
    "baseline": tfds.features.Tensor(shape=(NUM_LEADS,), dtype=np.float32),
    "lead_mask": tfds.features.Tensor(shape=(NUM_LEADS,), dtype=np.bool_),
    "sampling_rate": tfds.features.Tensor(shape=(), dtype=np.float32),
    "metadata": tfds.features.Tensor(shape=(NUM_METADATA,), dtype=np.float32),
  }
  features.update(extra)
  return tfds.features.FeaturesDict(features)
