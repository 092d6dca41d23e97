"""Tests for `clef_jax.synthetic` and the `synthetic_ecg` builder."""

import numpy as np
import pytest
import scipy.signal

from clef_jax import build, synthetic
from clef_jax import preprocess as pp
from clef_jax.data import schema


@pytest.fixture(scope="module")
def sample():
  """600 subjects (3 blocks), one record each."""
  return list(synthetic.generate_records(seed=1, start=0, stop=600))


def _stack(records, key):
  return np.stack([r[key] for r in records])


def test_deterministic_and_block_independent(sample):
  again = list(synthetic.generate_records(seed=1, start=260, stop=270))
  for a, b in zip(sample[260:270], again):
    assert a["record_id"] == b["record_id"]
    np.testing.assert_array_equal(a["signal"], b["signal"])
    np.testing.assert_array_equal(a["metadata"], b["metadata"])
  other = next(synthetic.generate_records(seed=2, start=0, stop=1))
  assert not np.array_equal(other["signal"], sample[0]["signal"])
  two = list(synthetic.generate_records(seed=1, start=3, stop=4, records_per_subject=2))
  assert [r["record_id"] for r in two] == ["s0000003_r0", "s0000003_r1"]
  np.testing.assert_array_equal(two[0]["signal"], sample[3]["signal"])
  assert two[0]["patient_id"] == two[1]["patient_id"] and two[0]["age"] == two[1]["age"]
  assert not np.array_equal(two[0]["signal"], two[1]["signal"])


def test_schema(sample):
  r = sample[0]
  assert r["signal"].shape == (5000, 12) and r["signal"].dtype == np.int16
  assert r["metadata"].shape == (schema.NUM_METADATA,) and r["metadata"].dtype == np.float32
  assert r["gain"].dtype == r["baseline"].dtype == np.float32
  masks = _stack(sample, "lead_mask")
  signals = _stack(sample, "signal")
  assert (~masks).any()  # some records lose a lead ...
  for i, lead in zip(*np.nonzero(~masks)):
    assert (signals[i, :, lead] == schema.INT16_NAN).all()  # ... stored as all-NaN
  gaps = (signals == schema.INT16_NAN) & masks[:, None, :]
  assert gaps.any()  # and some have NaN gaps in available leads


def test_metadata_is_plausible_and_correlated(sample):
  meta = _stack(sample, "metadata").astype(np.float64)
  sex, age, risk = (_stack(sample, k).astype(np.float64) for k in ("sex", "age", "risk"))
  assert set(np.unique(sex)) == {0.0, 1.0}
  assert age.min() >= 40 and age.max() <= 89
  assert np.isfinite(risk).all() and 0.003 < np.median(risk) < 0.3
  ranges = {2: (16, 55), 3: (85, 220), 4: (45, 130), 5: (50, 80), 6: (70, 450), 7: (30, 200)}
  for col, (lo, hi) in ranges.items():
    v = meta[:, col][np.isfinite(meta[:, col])]
    assert lo <= v.min() and v.max() <= hi, schema.METADATA_FIELDS[col]
  rate = meta[:, schema.RATE_META_INDEX]
  assert 0 <= rate.min() < 0.5 < rate.max() <= 1
  np.testing.assert_allclose(rate, 1 - np.isnan(meta[:, :9]).mean(axis=1), atol=1e-6)
  observed = np.isfinite(meta[:, schema.RISK_INDEX])
  assert 0.3 < observed.mean() < 0.95
  np.testing.assert_allclose(meta[observed, schema.RISK_INDEX], risk[observed], rtol=1e-6)
  both = np.isfinite(meta[:, 3])
  assert np.corrcoef(age[both], meta[both, 3])[0, 1] > 0.2  # SBP rises with age
  assert np.corrcoef(age, np.log(risk))[0, 1] > 0.5
  assert (
    meta[sex == 1, 5][np.isfinite(meta[sex == 1, 5])].mean()
    > meta[sex == 0, 5][np.isfinite(meta[sex == 0, 5])].mean() + 3
  )  # men are taller
  high = _stack(sample, "risk_high")
  np.testing.assert_array_equal(high, synthetic.risk_high(risk, age))
  np.testing.assert_array_equal(_stack(sample, "age_band"), (age - 40) // 10)


def test_limb_leads_obey_einthoven(sample):
  """III, aVR, aVL, aVF are derived from I and II (as ECG machines do), noise included."""
  checked = 0
  for r in sample[:50]:
    x = schema.to_physical(r["signal"], r["gain"], r["baseline"]).astype(np.float64)
    ok = np.isfinite(x[:, :6]).all(axis=1)
    if not ok.any():  # one of the six limb leads was lost
      continue
    checked += 1
    lead_i, lead_ii = x[ok, 0], x[ok, 1]
    derived = np.stack(
      [lead_ii - lead_i, -(lead_i + lead_ii) / 2, lead_i - lead_ii / 2, lead_ii - lead_i / 2],
      axis=1,
    )
    step = 1 / synthetic.DIGITAL_GAIN
    assert np.abs(x[ok, 2:6] - derived).max() <= 2 * step  # int16 rounding only
  assert checked >= 40


def _rr_features(r, lead=1):
  x = schema.to_physical(r["signal"], r["gain"], r["baseline"])[:, lead]
  x = pp.bandpass(pp.interpolate_nan(x), 500)
  s = np.abs(x)
  peaks, _ = scipy.signal.find_peaks(s, distance=150, height=0.4 * np.percentile(s, 99.5))
  rr = np.diff(peaks) / 500
  return 60 / rr.mean(), np.std(rr) / rr.mean()


def test_rhythm_and_heart_rate_are_in_the_signal(sample):
  feats = np.array([_rr_features(r) for r in sample[:300]])
  meta_hr = _stack(sample[:300], "metadata")[:, 7]
  ok = np.isfinite(meta_hr)
  assert np.corrcoef(feats[ok, 0], meta_hr[ok])[0, 1] > 0.8
  rhythm = _stack(sample[:300], "rhythm")
  assert set(np.unique(rhythm)) == {0, 1, 2}
  cv = feats[:, 1]
  assert np.median(cv[rhythm == 1]) > 3 * np.median(cv[rhythm == 0])  # AF: irregular RR
  assert np.median(cv[rhythm == 2]) > 2 * np.median(cv[rhythm == 0])  # ectopic pauses


def test_labels_are_learnable_from_one_lead(sample):
  """A linear model on crude lead-I features beats chance clearly (held-out subjects)."""

  def features(r):
    x = schema.to_physical(r["signal"], r["gain"], r["baseline"])[:, 0]
    x = pp.bandpass(pp.interpolate_nan(x), 500)
    s = np.abs(x)
    peaks, _ = scipy.signal.find_peaks(s, distance=150, height=0.4 * np.percentile(s, 99.5))
    rr = np.diff(peaks) / 500 if len(peaks) > 2 else np.ones(2)
    t_wave = [x[p + 100 : p + 175].mean() for p in peaks if p + 175 < len(x)] or [0.0]
    f = [
      60 / rr.mean(),
      rr.std() / rr.mean(),
      np.median(x[peaks]) if len(peaks) else 0.0,
      np.median(t_wave),
      x.std(),
    ]
    return f + [v * v for v in f]

  X = np.array([features(r) for r in sample])
  X = np.c_[(X - X.mean(0)) / (X.std(0) + 1e-9), np.ones(len(X))]
  train, test = slice(0, 400), slice(400, None)

  def predict(y):
    w = np.linalg.lstsq(X[train], y[train], rcond=None)[0]
    return X[test] @ w

  def auc(score, y):
    ranks = np.empty(len(score))
    ranks[np.argsort(score)] = np.arange(len(score))
    n1 = y.sum()
    return (ranks[y == 1].sum() - n1 * (n1 - 1) / 2) / (n1 * (len(y) - n1))

  sex = _stack(sample, "sex").astype(float)
  af = (_stack(sample, "rhythm") == 1).astype(float)
  high = _stack(sample, "risk_high").astype(float)
  log_risk = np.log(_stack(sample, "risk").astype(float))
  assert auc(predict(sex), sex[test]) > 0.62
  assert auc(predict(af), af[test]) > 0.85
  assert auc(predict(high), high[test]) > 0.65
  assert np.corrcoef(predict(log_risk), log_risk[test])[0, 1] > 0.35


def test_split_ranges():
  assert synthetic.split_ranges(2000) == {
    "train": (0, 1600),
    "validation": (1600, 1800),
    "test": (1800, 2000),
  }
  assert synthetic.split_ranges(40) == {"train": (0, 32), "validation": (32, 36), "test": (36, 40)}


def test_builder_tiny(tmp_path):
  builder_cls = build.builder_class("synthetic_ecg")
  builder = builder_cls(data_dir=tmp_path, config="tiny")
  builder.download_and_prepare(file_format="array_record")
  splits = {name: builder.as_data_source(split=name) for name in ("train", "validation", "test")}
  assert {k: len(v) for k, v in splits.items()} == {"train": 32, "validation": 4, "test": 4}
  patients = {k: {ex["patient_id"] for ex in v} for k, v in splits.items()}
  assert not (patients["train"] & patients["validation"]) and not (
    patients["train"] & patients["test"]
  )
  ex = splits["test"][0]
  want = {r["record_id"]: r for r in synthetic.generate_records(seed=0, start=36, stop=40)}
  ref = want[ex["record_id"].decode()]
  np.testing.assert_array_equal(ex["signal"], ref["signal"])
  np.testing.assert_array_equal(ex["metadata"], ref["metadata"])
  assert ex["rhythm"] == ref["rhythm"] and ex["sex"] == ref["sex"]
  # Config fields as kwargs give a named custom config (what `build --option` passes).
  custom = builder_cls(data_dir=tmp_path, num_subjects=12, seed=3)
  assert custom.builder_config.name == "n12_seed3_r1"
  assert builder_cls(data_dir=tmp_path, num_subjects=40).builder_config.name == "tiny"
  with pytest.raises(ValueError):
    builder_cls(data_dir=tmp_path, config="tiny", seed=1)


def test_builder_bytes_encoding_decodes_the_same(tmp_path):
  """The default raw int16 `"bytes"` encoding and the optional `"zlib"` store the same values."""
  from clef_jax import input_pipeline as ip

  builder_cls = build.builder_class("synthetic_ecg")
  sources = {}
  for encoding in ("zlib", "bytes"):
    builder = builder_cls(data_dir=tmp_path, num_subjects=10, signal_encoding=encoding)
    builder.download_and_prepare(file_format="array_record")
    sources[encoding] = ip.load_data_source(builder.data_path, split="train")
  assert builder.builder_config.name == "n10_seed0_r1"  # bytes is the default: no suffix.
  assert sources["zlib"].zlib_signal and not sources["bytes"].zlib_signal
  tfds_decoded = ip.load_data_source(builder.data_path, split="train", lean=False)
  for i in range(len(sources["zlib"])):
    a, b = sources["zlib"][i], sources["bytes"][i]
    for key in a:
      np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    np.testing.assert_array_equal(b["signal"], tfds_decoded[i]["signal"])
