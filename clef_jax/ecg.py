"""The ECG data layer under its former module name: every name here is `clef_jax.data`'s.

New code imports the submodules directly (`from clef_jax.data import schema, wfdb_io`); this module
keeps `from clef_jax import ecg; ecg.LEAD_ORDER` working for builders written against it.
"""

# ruff: noqa: F401, I001
from clef_jax.data.parsing import MISSING_TOKENS, parse_age, parse_header_comments, parse_sex
from clef_jax.data.schema import (
  INT16_NAN,
  LEAD_INDEX,
  LEAD_ORDER,
  METADATA_FIELDS,
  NUM_LEADS,
  NUM_METADATA,
  RATE_META_INDEX,
  RISK_INDEX,
  SAMPLING_RATE,
  WINDOW_SAMPLES,
  WINDOW_SECONDS,
  lead_index,
  record_features,
  to_physical,
)
from clef_jax.data.signal import resample, resample_ratio
from clef_jax.data.wfdb_io import (
  EXTRA_LEAD_NAMES,
  FLAT_STD_MV,
  INT16_MAX,
  RESAMPLED_GAIN,
  Ecg,
  Window,
  checked_fs,
  map_leads,
  quantise,
  read_header,
  read_single_lead,
  read_wfdb,
)
from clef_jax.data.windows import (
  AnnotatedWindow,
  Loaded,
  annotated_windows,
  cut_windows,
  imap_ordered,
  load_first_readable,
  record_loader,
  starcall,
  usable_leads,
)
