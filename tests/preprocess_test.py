"""Tests for `clef_jax.preprocess` and `clef_jax.noise`: each §D op, and the noise step against the
official logic."""

import numpy as np
import pytest
import scipy.io
import scipy.signal

from clef_jax import noise
from clef_jax import preprocess as pp
from clef_jax.data import schema

FS = 500.0


def _official_add_noise(x, ch_name, noise_mat, kind, start, noise_rms=0.1):
  """numpy re-derivation of the official noise step (docs/method.md §D) for a given draw.

  `kind` and `start` stand for the official `random.choice` and `random.randint(0, T - L - 1)`.
  Like the official code, it rescales the window *in place* inside `noise_mat`.
  """
  if kind == 0:  # identity
    return x.copy()
  data = noise_mat[noise.NOISE_KEYS[kind - 1]]
  length, t_noise = x.shape[-1], data.shape[1]
  if length < t_noise:
    window = data[:, start : start + length]  # a view: the rescaling below mutates `data`
  else:
    half = t_noise // 2
    window = np.tile(data[:, :half], (1, int(np.ceil(length / half))))[:, :length]
  for i in range(window.shape[0]):
    std = np.std(window[i])
    window[i] = noise_rms * window[i] / std if std > 0 else 0
  # The official CHANNEL_MAPPING has upper-case AVR/AVL/AVF; MIMIC's aVR/aVL/aVF fall back to 0.
  mapping = {
    "I": 0,
    "II": 1,
    "III": 2,
    "AVR": 3,
    "AVL": 4,
    "AVF": 5,
    "V1": 6,
    "V2": 7,
    "V3": 8,
    "V4": 9,
    "V5": 10,
    "V6": 11,
    "X": 12,
    "Y": 13,
    "Z": 14,
  }
  return x + window[mapping.get(ch_name, 0)]


@pytest.fixture
def fake_mat(tmp_path):
  rng = np.random.default_rng(7)
  arrays = {
    key: rng.normal(size=(noise.NOISE_ROWS, 900)) * (1 + np.arange(noise.NOISE_ROWS))[:, None]
    for key in noise.NOISE_KEYS
  }
  path = tmp_path / "DATA_noises_real.mat"
  scipy.io.savemat(path, arrays)
  return path


@pytest.mark.parametrize("lead_name", ["aVR", "aVF", "V3", "II"])
@pytest.mark.parametrize("length", [300, 1200])  # window branch and tiling branch (T_noise 900)
def test_faithful_noise_matches_official(fake_mat, lead_name, length):
  bank = noise.load_noise_mat(fake_mat)
  x = np.sin(np.arange(length) / 20.0)
  for seed in range(12):  # covers all five kinds
    kind, start = noise.draw_noise(np.random.default_rng(seed), bank, length)
    official_mat = {k: scipy.io.loadmat(fake_mat)[k] for k in noise.NOISE_KEYS}
    want = _official_add_noise(x, lead_name, official_mat, kind, start)
    got = noise.add_noise(
      x, schema.lead_index(lead_name), np.random.default_rng(seed), bank, faithful=True
    )
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    if length < 900 and 1 <= kind:  # the start draw follows randint(0, T - L - 1)
      assert 0 <= start <= 900 - length - 1


def test_noise_rows_differ_from_official_only_for_augmented_limb_leads(fake_mat):
  bank = noise.load_noise_mat(fake_mat)
  for lead in range(12):
    official = 0 if schema.LEAD_ORDER[lead] in ("aVR", "aVL", "aVF") else lead
    assert noise.noise_row(lead, faithful=True) == official
    assert noise.noise_row(lead) == lead
  # Ours never writes into the bank (the official rescales the cached window in place).
  before = {k: v.copy() for k, v in bank.arrays.items()}
  for seed in range(10):
    noise.add_noise(np.zeros(300), 1, np.random.default_rng(seed), bank)
  for k in before:
    np.testing.assert_array_equal(bank.arrays[k], before[k])


def test_noise_kind_distribution_and_scale(fake_mat):
  bank = noise.load_noise_mat(fake_mat)
  rng = np.random.default_rng(0)
  kinds = np.array([noise.draw_noise(rng, bank, 300)[0] for _ in range(5000)])
  np.testing.assert_allclose(np.bincount(kinds, minlength=5) / 5000, 0.2, atol=0.02)
  for kind in range(1, 5):
    w = noise.noise_window(bank, kind, 4, 17, 300)
    assert w.std() == pytest.approx(noise.NOISE_RMS)


def test_noise_windows_matches_single(fake_mat):
  bank = noise.load_noise_mat(fake_mat)
  kinds, rows, starts = (
    np.array([0, 1, 2, 3, 4, 2]),
    np.array([0, 3, 5, 11, 14, 0]),
    np.array([0, 5, 100, 599, 0, 7]),
  )
  got = noise.noise_windows(bank, kinds, rows, starts, 300)
  for i in range(len(kinds)):
    np.testing.assert_allclose(got[i], noise.noise_window(bank, kinds[i], rows[i], starts[i], 300))
  long = noise.noise_windows(bank, kinds, rows, np.zeros(6, int), 1200)  # tiled branch
  np.testing.assert_allclose(long[1], noise.noise_window(bank, 1, 3, 0, 1200))


def test_parametric_bank_types():
  bank = noise.parametric_noise_bank(seed=3, seconds=40.0)
  assert bank is noise.parametric_noise_bank(seed=3, seconds=40.0)  # cached per process
  assert set(bank.arrays) == set(noise.NOISE_KEYS)
  for a in bank.arrays.values():
    assert a.shape == (noise.NOISE_ROWS, 20000) and np.isfinite(a).all()
    assert not a.flags.writeable

  def low_fraction(a, hz):  # share of power below `hz`
    f, p = scipy.signal.welch(a, fs=FS, nperseg=8192, axis=-1)
    return p[:, f < hz].sum() / p.sum()

  assert low_fraction(bank.arrays["baseline_wander"], 0.6) > 0.9
  assert low_fraction(bank.arrays["motion_artefacts"], 1.0) < 0.3
  em = bank.arrays["electrode_movement"]
  assert np.abs(np.diff(em, axis=-1)).max() > 20 * np.abs(np.diff(em, axis=-1)).mean()  # steps


def test_select_leads_policy():
  rng = np.random.default_rng(0)
  mask = np.ones(12, bool)
  draws = np.array([pp.select_leads(mask, rng) for _ in range(20000)])
  assert np.mean(draws[:, 0] == draws[:, 1]) == pytest.approx(0.8 + 0.2 / 12, abs=0.01)
  assert np.all((draws[:, 1] == draws[:, 0]) | (draws[:, 1] == draws[:, 2]))
  np.testing.assert_allclose(np.bincount(draws[:, 0], minlength=12) / 20000, 1 / 12, atol=0.01)
  mask = np.zeros(12, bool)
  mask[[1, 7]] = True
  draws = np.array([pp.select_leads(mask, rng, p_same=0.0) for _ in range(2000)])
  assert set(np.unique(draws)) == {1, 7}
  assert np.mean(draws[:, 0] == draws[:, 1]) == pytest.approx(0.5, abs=0.05)
  assert set(np.unique([pp.select_leads(np.zeros(12, bool), rng)[:2] for _ in range(300)])) == set(
    range(12)
  )  # no lead available: fall back to all 12


def test_interpolate_nan():
  x = np.array([[np.nan, 1.0, np.nan, 3.0, np.nan], [np.nan] * 5, [1.0, 2, 3, 4, 5]])
  y = pp.interpolate_nan(x)
  np.testing.assert_array_equal(y, [[1, 1, 2, 3, 3], [0] * 5, [1, 2, 3, 4, 5]])
  clean = np.arange(5.0)
  assert pp.interpolate_nan(clean) is clean  # no NaN: no copy
  assert np.isnan(x).sum() == 8  # input untouched


def test_bandpass_is_official_filtfilt_at_500():
  x = np.random.default_rng(0).normal(size=(3, 5000))
  b, a = scipy.signal.butter(5, [0.67 / 250, 40 / 250], "band")
  np.testing.assert_array_equal(pp.bandpass(x, 500), scipy.signal.filtfilt(b, a, x))
  np.testing.assert_array_equal(pp.bandpass(x[1], 500), scipy.signal.filtfilt(b, a, x[1]))
  # Other rates: ours is designed for the real rate; faithful keeps the 500 Hz design.
  np.testing.assert_array_equal(pp.bandpass(x, 250, faithful=True), pp.bandpass(x, 500))
  b2, a2 = scipy.signal.butter(5, [0.67 / 125, 40 / 125], "band")
  np.testing.assert_array_equal(pp.bandpass(x, 250), scipy.signal.filtfilt(b2, a2, x))
  hits = pp.butter_ba.cache_info().hits
  pp.bandpass(x, 250)
  assert pp.butter_ba.cache_info().hits == hits + 1
  with pytest.raises(ValueError):
    pp.bandpass(x, 60)  # 40 Hz is above Nyquist
  # Above 500 Hz the transfer-function form is unstable; "auto" uses second-order sections.
  assert np.abs(pp.bandpass(x, 1000, form="ba")).max() > 100  # input std is 1
  np.testing.assert_array_equal(
    pp.bandpass(x, 1000), scipy.signal.sosfiltfilt(pp.butter_sos(1000.0), x)
  )


@pytest.mark.parametrize("fs", [250.0, 500.0, 1000.0])
def test_bandpass_response_at_real_rate(fs):
  t = np.arange(int(20 * fs)) / fs
  mid = slice(int(5 * fs), int(15 * fs))
  for hz, gain in [(0.1, 0.0), (10.0, 1.0), (90.0, 0.0)]:
    if hz >= fs / 2:
      continue
    y = pp.bandpass(np.sin(2 * np.pi * hz * t), fs)
    assert np.abs(y[mid]).max() == pytest.approx(gain, abs=0.02)


def test_resample():
  t250 = np.arange(2500) / 250.0
  y = pp.resample(np.sin(2 * np.pi * 5 * t250), 250, 500)
  assert y.shape == (5000,)
  t500 = np.arange(5000) / 500.0
  np.testing.assert_allclose(y[100:-100], np.sin(2 * np.pi * 5 * t500)[100:-100], atol=1e-2)
  assert pp.resample(np.zeros((2, 10000)), 1000, 500).shape == (2, 5000)


def test_zero_mask_distribution():
  rng = np.random.default_rng(0)
  lengths, hits = [], 0
  for _ in range(4000):
    x = pp.zero_mask(np.ones(5000), rng)
    zeros = np.flatnonzero(x == 0)
    if zeros.size:
      hits += 1
      lengths.append(zeros.size)
      assert zeros[-1] - zeros[0] + 1 == zeros.size  # one contiguous span
  assert hits / 4000 == pytest.approx(0.2, abs=0.02)
  assert 500 <= min(lengths) and max(lengths) <= 1499
  assert pp.draw_zero_mask(rng, 5000, p=0.0) == (0, 0)


def test_zscore():
  x = np.random.default_rng(0).normal(3.0, 2.0, size=(4, 5000))
  z = pp.zscore(x)
  np.testing.assert_allclose(z.mean(-1), 0, atol=1e-12)
  np.testing.assert_allclose(z.std(-1), 1, atol=1e-6)  # ddof 0
  np.testing.assert_array_equal(pp.zscore(np.full(10, 5.0)), np.zeros(10))
