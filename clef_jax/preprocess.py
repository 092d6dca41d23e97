"""Pretraining preprocessing ops (docs/method.md §D): plain numpy functions, random ones take a Generator.

The per-view chain is `interpolate_nan -> bandpass -> noise.add_noise -> zero_mask -> zscore`, after
`select_leads` has picked the two views' leads. Every op works on the last axis, so the same
function serves one view `(T,)` or a batch `(N, T)` (which is how `input_pipeline` filters a whole
batch with one `filtfilt` call).

Deliberate differences from the official code (`faithful=True` restores the first two where they
change the numbers):

- **Noise rows.** The official `CHANNEL_MAPPING` has upper-case `AVR/AVL/AVF` keys while MIMIC names
  are `aVR/aVL/aVF`, so those leads get lead I's noise row (row 0). We use the matching row;
  `faithful=True` maps them to row 0. (The official view 2 also keeps its *originally drawn* lead
  name for the noise lookup after being forced to view 1's lead; `select_leads` returns that lead
  too, and `input_pipeline` uses it when faithful.)
- **Filter rate.** The official filter is designed for 500 Hz whatever the record's rate; we
  design it for the rate of the samples being filtered (`faithful=True`: always 500 Hz).
- **No in-place mutation** of the cached noise: the official rescales the noise window inside the
  loaded `.mat` array (a numpy view), so later draws overlapping that window see rescaled data.
  Ours leaves the bank untouched; results then depend only on the draw, which keeps worker count
  and checkpoint restarts from changing the data.
- **Random source.** One seeded `np.random.Generator` per example (grain's `random_map`) instead
  of numpy's and Python's global generators; the distributions are the same, the streams are not.
- **Leads.** The official draws among all 12 leads; we draw among the leads the record has
  (`lead_mask`), so a missing lead never becomes a training view.
"""

from __future__ import annotations

import functools

import numpy as np

from clef_jax.data import schema
from clef_jax.data.signal import resample  # noqa: F401  (re-exported: `pp.resample`)

# Bandpass of docs/method.md §D: Butterworth order 5 (10 poles), 0.67-40 Hz.
BAND_HZ = (0.67, 40.0)
FILTER_ORDER = 5
OFFICIAL_FS = float(schema.SAMPLING_RATE)  # The models' input rate.


# ---------------------------------------------------------------------------------------------
# Lead sampling.


def select_leads(
  lead_mask: np.ndarray, rng: np.random.Generator, p_same: float = 0.8
) -> tuple[int, int, int]:
  """Picks the two views' leads as docs/method.md §D does, among the leads the record has.

  Two draws with replacement, then with probability `p_same` the second becomes the first, so
  P(same lead) = p_same + (1 - p_same)/k for k available leads. The official code draws among all
  12 leads; we skip leads with `lead_mask == False` (all 12 if none is available).

  Args:
    lead_mask: `(12,)` bool, True where the record has the lead.
    rng: per-example generator.
    p_same: probability of forcing view 2 onto view 1's lead (0.8 in the official code).

  Returns:
    `(lead1, lead2, drawn2)` indices into `schema.LEAD_ORDER`; `drawn2` is view 2's lead before the
    forcing (the official code looks up view 2's noise row with it).
  """
  available = np.flatnonzero(lead_mask)
  if available.size == 0:
    available = np.arange(len(lead_mask))
  first, drawn2 = available[rng.integers(0, available.size, size=2)]  # with replacement
  second = first if rng.random() < p_same else drawn2
  return int(first), int(second), int(drawn2)


# ---------------------------------------------------------------------------------------------
# Deterministic signal ops.


def interpolate_nan(x: np.ndarray) -> np.ndarray:
  """Linearly interpolates NaN samples along the last axis; an all-NaN row becomes zeros.

  Outside the first/last valid sample `np.interp` holds the edge value (as the official code).

  Args:
    x: `(..., T)` float.

  Returns:
    Array of the same shape and dtype without NaN (a copy only if there was NaN).
  """
  nan = np.isnan(x)
  if not nan.any():
    return x
  x = x.copy()
  rows = x.reshape(-1, x.shape[-1])
  nan_rows = nan.reshape(-1, x.shape[-1])
  t = np.arange(x.shape[-1])
  for i in np.flatnonzero(nan_rows.any(axis=1)):
    bad = nan_rows[i]
    if bad.all():
      rows[i] = 0.0
    else:
      rows[i, bad] = np.interp(t[bad], t[~bad], rows[i, ~bad])
  return x


@functools.lru_cache(maxsize=32)
def butter_ba(
  fs: float, low: float = BAND_HZ[0], high: float = BAND_HZ[1], order: int = FILTER_ORDER
) -> tuple[np.ndarray, np.ndarray]:
  """Cached `(b, a)` of the Butterworth bandpass at sampling rate `fs` (transfer-function form,
  as the official `butter(5, [0.67/250, 40/250], 'band')`)."""
  nyquist = fs / 2.0
  if not 0 < low < high < nyquist:
    raise ValueError(f"Band {low}-{high} Hz is not inside (0, {nyquist}) Hz for fs={fs}.")
  import scipy.signal  # Lazy: importing it takes ~1 s, which every command line would pay.

  b, a = scipy.signal.butter(order, [low / nyquist, high / nyquist], btype="band")
  return b, a


@functools.lru_cache(maxsize=32)
def butter_sos(
  fs: float, low: float = BAND_HZ[0], high: float = BAND_HZ[1], order: int = FILTER_ORDER
) -> np.ndarray:
  """Cached second-order sections of the same Butterworth bandpass."""
  butter_ba(fs, low, high, order)  # Same range check.
  import scipy.signal  # Lazy.

  return scipy.signal.butter(order, [low / (fs / 2), high / (fs / 2)], btype="band", output="sos")


def bandpass(x: np.ndarray, fs: float, *, faithful: bool = False, form: str = "auto") -> np.ndarray:
  """Zero-phase Butterworth bandpass 0.67-40 Hz along the last axis.

  At 500 Hz (and below) this is `scipy.signal.filtfilt(b, a, x)` with its defaults (padtype 'odd',
  padlen 3 * 11 = 33), exactly the official computation, in float64. The 10-pole transfer function
  is ill-conditioned for a 0.67 Hz edge: at 500 Hz it is ~1e-3 (relative) away from the exact
  filter, at 600 Hz ~5e-3, and from ~750 Hz it is unstable (output blows up). So `form="auto"`
  switches to `sosfiltfilt` (second-order sections, same padding) above 500 Hz. The pipeline
  resamples to 500 Hz before filtering, so it always runs the official `filtfilt(b, a)`.

  Args:
    x: `(..., T)` signal(s); T must exceed 33.
    fs: sampling rate of `x` in Hz; the filter is designed for it.
    faithful: design the filter for 500 Hz whatever `fs` is (the official behaviour).
    form: "ba" (transfer function + `filtfilt`), "sos" (`sosfiltfilt`), or "auto".

  Returns:
    float64 array shaped like `x`.
  """
  fs = OFFICIAL_FS if faithful else float(fs)
  if form == "auto":
    form = "ba" if fs <= OFFICIAL_FS else "sos"
  x = np.asarray(x, dtype=np.float64)
  import scipy.signal  # Lazy.

  if form == "ba":
    b, a = butter_ba(fs)
    return scipy.signal.filtfilt(b, a, x, axis=-1)
  if form == "sos":
    return scipy.signal.sosfiltfilt(butter_sos(fs), x, axis=-1)
  raise ValueError(f"form must be 'ba', 'sos' or 'auto'; got {form!r}.")


def zscore(x: np.ndarray, eps: float = 1e-8) -> np.ndarray:
  """`(x - mean) / (std + eps)` over the last axis, std with ddof 0 (as the official)."""
  mean = x.mean(axis=-1, keepdims=True)
  std = x.std(axis=-1, keepdims=True)
  return (x - mean) / (std + eps)


# ---------------------------------------------------------------------------------------------
# Zero masking.


def draw_zero_mask(
  rng: np.random.Generator, length: int, p: float = 0.2, span: tuple[float, float] = (0.1, 0.3)
) -> tuple[int, int]:
  """Draws the official zero-mask: with probability `p`, `int(length * U(span))` samples at a
  uniform start in `[0, length - mask_len]`. Returns `(start, mask_len)`, `(0, 0)` for no mask."""
  if not (p > 0 and rng.random() < p):
    return 0, 0
  mask_len = int(length * rng.uniform(*span))
  start = int(rng.integers(0, length - mask_len + 1))
  return start, mask_len


def zero_mask(
  x: np.ndarray, rng: np.random.Generator, p: float = 0.2, span: tuple[float, float] = (0.1, 0.3)
) -> np.ndarray:
  """With probability `p`, zeroes a span of 10-30 % of the last axis (500-1499 of 5000 samples).

  Args:
    x: `(..., T)`; every row gets the same span (one view is one row).
    rng: per-example generator.
    p: masking probability (0.2 in the official code).
    span: range of the masked fraction.

  Returns:
    Masked copy of `x` (or `x` itself when not masked).
  """
  start, mask_len = draw_zero_mask(rng, x.shape[-1], p, span)
  if mask_len == 0:
    return x
  x = x.copy()
  x[..., start : start + mask_len] = 0.0
  return x
