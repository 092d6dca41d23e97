"""Noise augmentation of pretraining views (docs/method.md §D): the noise bank and its draws.

A `NoiseBank` holds the real `DATA_noises_real.mat` (`load_noise_mat`) or a parametric stand-in
(`parametric_noise_bank`); `add_noise` adds one drawn window of one noise type to a view, with the
type drawn uniformly over `NOISE_TYPES` (identity included), as the official code does. The
differences from it (noise rows of aVR/aVL/aVF, no in-place rescaling of the bank) are listed in
`clef_jax.preprocess`; `faithful=True` restores the first.
"""

from __future__ import annotations

import dataclasses
import functools
import os

import numpy as np
import scipy.signal

from clef_jax.data import schema

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
  seed: int = 0, seconds: float = 120.0, fs: float = float(schema.SAMPLING_RATE)
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
