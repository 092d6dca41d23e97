"""Pretraining preprocessing ops (docs/method.md §D): plain numpy functions, random ones take a Generator.

The per-view chain is `interpolate_nan -> bandpass -> add_noise -> zero_mask -> zscore`, after
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

import dataclasses
import functools
import os

import numpy as np
import scipy.signal

from clef_jax.data import schema
from clef_jax.data.signal import resample  # noqa: F401  (re-exported: `pp.resample`)

# Bandpass of docs/method.md §D: Butterworth order 5 (10 poles), 0.67-40 Hz.
BAND_HZ = (0.67, 40.0)
FILTER_ORDER = 5
OFFICIAL_FS = float(schema.SAMPLING_RATE)  # The models' input rate.
NOISE_RMS = 0.1  # mV; each noise row is rescaled to this std before being added.

# Noise types in the official order: 0 identity, then the four `.mat` keys.
NOISE_KEYS: tuple[str, ...] = (
  "motion_artefacts",
  "electrode_movement",
  "baseline_wander",
  "mixture_of_noises",
)
NOISE_TYPES: tuple[str, ...] = ("identity",) + NOISE_KEYS
# `DATA_noises_real.mat` rows: I, II, III, AVR, AVL, AVF, V1-V6, X, Y, Z. Rows 0-11 are
# `schema.LEAD_ORDER`, so a lead's index is its row.
NOISE_ROWS = 15


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
  b, a = scipy.signal.butter(order, [low / nyquist, high / nyquist], btype="band")
  return b, a


@functools.lru_cache(maxsize=32)
def butter_sos(
  fs: float, low: float = BAND_HZ[0], high: float = BAND_HZ[1], order: int = FILTER_ORDER
) -> np.ndarray:
  """Cached second-order sections of the same Butterworth bandpass."""
  butter_ba(fs, low, high, order)  # Same range check.
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


# ---------------------------------------------------------------------------------------------
# Noise augmentation.


@dataclasses.dataclass(frozen=True)
class NoiseBank:
  """Noise records, one `(15, T_noise)` float array per key of `NOISE_KEYS` (rows as the `.mat`).

  Either the real `DATA_noises_real.mat` (`load_noise_mat`) or a parametric stand-in
  (`parametric_noise_bank`). The arrays are treated as read-only.
  """

  arrays: dict[str, np.ndarray]
  source: str

  @property
  def length(self) -> int:
    return min(a.shape[1] for a in self.arrays.values())


def load_noise_mat(path: str | os.PathLike) -> NoiseBank:
  """Loads the PhysioNet `DATA_noises_real.mat` (Sološenko et al. simulator, v1.3.1).

  Args:
    path: the `.mat` file; must hold the four `NOISE_KEYS`, each `(15, T)`.

  Returns:
    A `NoiseBank` with float64 arrays (as `scipy.io.loadmat` gives them).
  """
  import scipy.io  # Lazy: only needed with a real noise file.

  mat = scipy.io.loadmat(os.fspath(path))
  missing = [k for k in NOISE_KEYS if k not in mat]
  if missing:
    raise KeyError(f"{path} lacks noise keys {missing}; has {sorted(mat)}.")
  arrays = {}
  for key in NOISE_KEYS:
    a = np.asarray(mat[key], dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != NOISE_ROWS:
      raise ValueError(f"{path}:{key} has shape {a.shape}; expected ({NOISE_ROWS}, T).")
    a.setflags(write=False)
    arrays[key] = a
  return NoiseBank(arrays=arrays, source=os.fspath(path))


def _lowpass_noise(rng, shape, fs, cutoff, order=2):
  """Gaussian noise low-passed at `cutoff` Hz, unit std per row."""
  sos = scipy.signal.butter(order, cutoff / (fs / 2), output="sos")
  y = scipy.signal.sosfilt(sos, rng.standard_normal(shape), axis=-1)
  return y / y.std(axis=-1, keepdims=True)


@functools.lru_cache(maxsize=4)
def parametric_noise_bank(
  seed: int = 0, seconds: float = 120.0, fs: float = OFFICIAL_FS
) -> NoiseBank:
  """A `DATA_noises_real.mat` stand-in: the same four noise types, modelled parametrically.

  Each key holds `(15, seconds * fs)` float64 rows (independent per lead), scaled to unit std; the
  window draw rescales to `NOISE_RMS` anyway. Deterministic in `seed`; cached per process.

  - `baseline_wander`: 4 random sinusoids in 0.05-0.5 Hz plus a random walk low-passed at 0.5 Hz.
  - `electrode_movement`: Poisson (0.4 /s) steps of random sign and size, each decaying back with
    a 0.2-1.5 s time constant, plus a short spike at the step, over a low-level 0.5 Hz drift.
  - `motion_artefacts`: muscle/motion-like band-limited noise (1-40 Hz) whose amplitude is
    modulated by slow bursts (0.1-1 s), plus a little low-frequency motion.
  - `mixture_of_noises`: the sum of the three above (each unit std), as the simulator's mixture.

  Args:
    seed: bank seed.
    seconds: bank length per row.
    fs: sampling rate the bank is generated for (the noise is added sample by sample).

  Returns:
    A `NoiseBank` with `source="parametric"`.
  """
  rng = np.random.default_rng([seed, 0x4E015E])
  n = int(seconds * fs)
  shape = (NOISE_ROWS, n)
  t = np.arange(n) / fs

  freqs = rng.uniform(0.05, 0.5, (NOISE_ROWS, 4, 1))
  phases = rng.uniform(0, 2 * np.pi, (NOISE_ROWS, 4, 1))
  amps = rng.uniform(0.3, 1.0, (NOISE_ROWS, 4, 1))
  bw = (amps * np.sin(2 * np.pi * freqs * t + phases)).sum(axis=1)
  bw = bw / bw.std(axis=-1, keepdims=True) + _lowpass_noise(rng, shape, fs, 0.5)

  em = 0.2 * _lowpass_noise(rng, shape, fs, 0.5)
  for row in range(NOISE_ROWS):
    events = np.flatnonzero(rng.random(n) < 0.4 / fs)
    for start in events:
      tau = rng.uniform(0.2, 1.5) * fs
      size = rng.choice([-1.0, 1.0]) * rng.lognormal(0.0, 0.5)
      k = np.arange(min(n - start, int(8 * tau)))  # exp(-8) ~ 3e-4: the step has recovered.
      em[row, start : start + k.size] += size * np.exp(-k / tau)
      spike = min(int(0.04 * fs), n - start)
      em[row, start : start + spike] += 2.0 * size * np.hanning(spike)

  sos = scipy.signal.butter(2, [1.0 / (fs / 2), 40.0 / (fs / 2)], btype="band", output="sos")
  emg = scipy.signal.sosfilt(sos, rng.standard_normal(shape), axis=-1)
  bursts = np.exp(_lowpass_noise(rng, shape, fs, rng.uniform(1.0, 10.0)))  # Log-normal envelope.
  ma = emg * bursts + 0.3 * _lowpass_noise(rng, shape, fs, 2.0) * emg.std()

  arrays = {}
  parts = {"baseline_wander": bw, "electrode_movement": em, "motion_artefacts": ma}
  for key, a in parts.items():
    arrays[key] = a / a.std(axis=-1, keepdims=True)
  arrays["mixture_of_noises"] = sum(arrays[k] for k in parts)
  for a in arrays.values():
    a.setflags(write=False)
  return NoiseBank(arrays=arrays, source="parametric")


def noise_row(lead: int, *, faithful: bool = False) -> int:
  """Noise-bank row for lead index `lead` (`schema.LEAD_ORDER`).

  `faithful=True` reproduces the official lookup: aVR, aVL and aVF are not found in its
  upper-case `CHANNEL_MAPPING`, so they get row 0 (lead I's noise).
  """
  if faithful and schema.LEAD_ORDER[lead] in ("aVR", "aVL", "aVF"):
    return 0
  return int(lead)


def draw_noise(rng: np.random.Generator, bank: NoiseBank, length: int) -> tuple[int, int]:
  """Draws the official five-way noise choice and the window start.

  Returns:
    `(kind, start)`: `kind` indexes `NOISE_TYPES` (0 = identity, uniform over 5); `start` is the
    window start, uniform in `[0, T_noise - length - 1]` as the official `random.randint(0,
    T - L - 1)`, or 0 when the bank is too short (the window is then tiled, see `noise_window`).
  """
  kind = int(rng.integers(len(NOISE_TYPES)))
  if kind == 0:
    return 0, 0
  t_noise = bank.arrays[NOISE_KEYS[kind - 1]].shape[1]
  start = int(rng.integers(0, t_noise - length)) if length < t_noise else 0
  return kind, start


def noise_window(
  bank: NoiseBank, kind: int, row: int, start: int, length: int, noise_rms: float = NOISE_RMS
) -> np.ndarray:
  """One lead's noise window `(length,)`, rescaled to std `noise_rms` (0 if the window is flat).

  Long banks give `[start, start + length)`; a bank not longer than `length` is tiled from its
  first half, as the official code does.
  """
  if kind == 0:
    return np.zeros(length)
  data = bank.arrays[NOISE_KEYS[kind - 1]]
  if length < data.shape[1]:
    w = data[row, start : start + length]
  else:
    half = data.shape[1] // 2
    w = np.tile(data[row, :half], int(np.ceil(length / half)))[:length]
  std = w.std()
  return noise_rms * (w / std) if std > 0 else np.zeros(length)


def add_noise(
  x: np.ndarray,
  lead: int,
  rng: np.random.Generator,
  bank: NoiseBank,
  *,
  noise_rms: float = NOISE_RMS,
  faithful: bool = False,
) -> np.ndarray:
  """Official `ecg_positive_augmentation` noise step for one view (without the zero mask).

  Picks identity / motion / electrode / baseline / mixture uniformly, takes a random window of
  that noise type's row for `lead`, rescales it to std `noise_rms` and adds it.

  Args:
    x: `(T,)` one view in mV (after the bandpass).
    lead: index of the view's lead in `schema.LEAD_ORDER` (the noise row).
    rng: per-example generator.
    bank: `load_noise_mat(path)` or `parametric_noise_bank()`.
    noise_rms: target noise std in mV.
    faithful: use the official row mapping (aVR/aVL/aVF -> row 0).

  Returns:
    `x + noise` as float64.
  """
  kind, start = draw_noise(rng, bank, x.shape[-1])
  return x + noise_window(
    bank, kind, noise_row(lead, faithful=faithful), start, x.shape[-1], noise_rms
  )


def noise_windows(
  bank: NoiseBank,
  kinds: np.ndarray,
  rows: np.ndarray,
  starts: np.ndarray,
  length: int,
  noise_rms: float = NOISE_RMS,
) -> np.ndarray:
  """Vectorised `noise_window` for N views: `(N,)` kinds/rows/starts -> `(N, length)` float64."""
  out = np.zeros((len(kinds), length))
  for kind in range(1, len(NOISE_TYPES)):
    sel = np.flatnonzero(kinds == kind)
    if sel.size == 0:
      continue
    data = bank.arrays[NOISE_KEYS[kind - 1]]
    for i in sel:  # slices: cheaper than a fancy-index gather of N x length indices
      if length < data.shape[1]:
        out[i] = data[rows[i], starts[i] : starts[i] + length]
      else:
        out[i] = noise_window(bank, kind, rows[i], 0, length, 1.0)
  std = out.std(axis=-1, keepdims=True)  # identity rows: std 0 -> stay 0
  np.divide(out, std, out=out, where=std > 0)
  out *= noise_rms
  return out
