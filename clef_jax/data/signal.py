"""Sampling-rate conversion: the one `resample` every reader, builder and pipeline uses."""

from __future__ import annotations

import fractions
import math

import numpy as np


def resample_ratio(fs: float, target: float) -> tuple[int, int]:
  """`(up, down)` integers with `fs * up / down == target` (for `resample_poly`)."""
  ratio = fractions.Fraction(target).limit_denominator(10_000) / fractions.Fraction(
    fs
  ).limit_denominator(10_000)
  return ratio.numerator, ratio.denominator


def resample(
  x: np.ndarray,
  fs: float,
  target: float,
  *,
  axis: int = -1,
  padtype: str = "constant",
  bridge_nan: bool = False,
) -> np.ndarray:
  """Polyphase resampling (`scipy.signal.resample_poly`, Kaiser window) from `fs` to `target` Hz.

  Args:
    x: signal(s), time along `axis`.
    fs: input rate, Hz.
    target: output rate, Hz.
    axis: the time axis (-1 for `(..., T)` views, 0 for `(T, C)` records).
    padtype: `resample_poly`'s edge padding. "line" avoids the dip towards zero that constant
      padding gives at the edges of signals with an offset (what builders store); "constant" is
      what the pretraining and embedding pipelines were measured with.
    bridge_nan: carry NaN gaps along: gaps are linearly bridged before filtering (a NaN would
      smear over the whole filter length), channels that are all NaN are filtered as zeros, and
      NaN is put back at the output samples whose nearest input sample was NaN. Without it NaN
      propagates through the filter.

  Returns:
    float64, `ceil(T * up / down)` samples along `axis` (`resample_ratio`); `x` unchanged (as
    float64) when the rates are equal.
  """
  import scipy.signal  # Lazy.

  x = np.asarray(x, np.float64)
  if fs == target:
    return x
  up, down = resample_ratio(fs, target)
  if not bridge_nan:
    return scipy.signal.resample_poly(x, up, down, axis=axis, padtype=padtype)
  moved = np.moveaxis(x, axis, 0)
  n_in = moved.shape[0]
  flat = moved.reshape(n_in, -1)
  nan = np.isnan(flat)
  filled = flat.copy()
  t = np.arange(n_in)
  for c in range(flat.shape[1]):
    if nan[:, c].all():
      filled[:, c] = 0.0
    elif nan[:, c].any():
      ok = ~nan[:, c]
      filled[:, c] = np.interp(t, t[ok], flat[ok, c])
  n_out = math.ceil(n_in * up / down)
  y = scipy.signal.resample_poly(filled, up, down, axis=0, padtype=padtype)[:n_out]
  nearest = np.minimum(np.round(np.arange(n_out) * down / up).astype(np.int64), n_in - 1)
  y[nan[nearest]] = np.nan
  return np.moveaxis(y.reshape((n_out,) + moved.shape[1:]), 0, axis)
