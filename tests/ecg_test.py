"""Tests for the data layer (`clef_jax.data`: WFDB reading, windows, resampling, parsing), on real
shared records and crafted files."""

import numpy as np
import pytest
import scipy.signal

from clef_jax import build_report as br
from clef_jax.data import parsing, schema, signal, wfdb_header, wfdb_io, windows

wfdb = pytest.importorskip("wfdb")

MIMIC_LEADS = ("I", "II", "III", "aVR", "aVF", "aVL", "V1", "V2", "V3", "V4", "V5", "V6")


def _write(tmp_path, name, x, *, leads, fs=500, fmt="16", gain=1000.0, units="mV"):
  wfdb.wrsamp(
    name,
    fs=fs,
    units=[units] * len(leads),
    sig_name=list(leads),
    p_signal=x,
    fmt=[fmt] * len(leads),
    adc_gain=[gain] * len(leads),
    baseline=[0] * len(leads),
    write_dir=str(tmp_path),
  )
  return tmp_path / name


def _ramp(n, c, seed=0):
  rng = np.random.default_rng(seed)
  return np.cumsum(rng.normal(0, 0.02, (n, c)), axis=0) + np.arange(c) * 0.1


def test_lead_index_is_case_insensitive():
  assert schema.lead_index("avr") == schema.lead_index("AVR") == schema.lead_index(" aVR ") == 3
  with pytest.raises(KeyError):
    schema.lead_index("vx")


def test_map_leads_flags_dropped_and_missing_channels():
  channels, leads, flags = wfdb_io.map_leads(["i", "II", "foo", "vx", "ii", "AVL"])
  assert channels == [0, 1, 5] and leads == [0, 1, 4]
  assert flags[br.UNKNOWN_LEAD_NAME] == "'foo'"
  assert flags[br.EXTRA_LEAD] == "'vx'"
  assert flags[br.DUPLICATE_LEAD] == "'ii'"
  absent = ["III", "aVR", "aVF"] + [f"V{i}" for i in range(1, 7)]
  assert flags[br.MISSING_LEADS].split(",") == absent


def test_cinc2021_records_are_stored_exactly(shared_data):
  """Every real Challenge record (.mat, 16x1+24): stored digital -> physical == wfdb p_signal."""
  paths = sorted((shared_data / "cinc2021").glob("*.hea"))
  assert len(paths) == 49
  for path in paths:
    rec = wfdb_io.read_wfdb(path.with_suffix(""))
    ref = wfdb.rdrecord(str(path.with_suffix("")))
    order = [schema.lead_index(n) for n in ref.sig_name]
    assert rec.signal.dtype == np.int16 and rec.signal.shape == (ref.sig_len, 12)
    np.testing.assert_array_equal(rec.physical()[:, order], ref.p_signal.astype(np.float32))
    digital = wfdb.rdrecord(str(path.with_suffix("")), physical=False).d_signal
    np.testing.assert_array_equal(rec.signal[:, order], digital)
    assert rec.lead_present.all() and rec.sampling_rate == 500
    assert br.RESAMPLED not in rec.flags


def test_ptb_diagnostic_is_resampled_and_remapped(shared_data):
  """1000 Hz, 15 lower-case leads: 12 kept in LEAD_ORDER, resampled to 500 Hz, 1 uV grid."""
  path = shared_data / "ptb_diagnostic" / "s0010_re"
  rec = wfdb_io.read_wfdb(path)
  ref = wfdb.rdrecord(str(path))
  assert rec.native_sampling_rate == 1000 and rec.sampling_rate == 500
  assert rec.signal.shape == (19200, 12)
  np.testing.assert_array_equal(rec.gain, wfdb_io.RESAMPLED_GAIN)
  assert rec.flags[br.RESAMPLED] == "1000 Hz -> 500 Hz"
  assert rec.flags[br.EXTRA_LEAD] == "'vx'; 'vy'; 'vz'"
  order = [schema.lead_index(n) for n in ref.sig_name[:12]]
  assert order == list(range(12))  # i, ii, ..., v6 is already the standard order.
  expected = scipy.signal.resample_poly(ref.p_signal[:, :12], 1, 2, axis=0, padtype="line")
  np.testing.assert_allclose(rec.physical()[:, order], expected, atol=0.5 / 1000 + 1e-6)
  # And it is still the same waveform as plain decimation, up to the anti-aliasing filter.
  rms = np.sqrt(np.mean((rec.physical()[:, order] - ref.p_signal[::2, :12]) ** 2))
  assert rms < 0.01


def test_leads_are_mapped_by_name_not_position(tmp_path):
  x = _ramp(5000, 12)
  path = _write(tmp_path, "40000001", x, leads=MIMIC_LEADS, gain=200.0)
  rec = wfdb_io.read_wfdb(path)
  ref = wfdb.rdrecord(str(path)).p_signal
  for j, name in enumerate(MIMIC_LEADS):
    np.testing.assert_array_equal(
      rec.physical()[:, schema.lead_index(name)], ref[:, j].astype(np.float32)
    )
  assert not rec.flags


def test_nan_samples_and_format_212(tmp_path):
  x = _ramp(5000, 3)
  x[100:110, 1] = np.nan
  path = _write(tmp_path, "r212", x, leads=["II", "V1", "V2"], fmt="212", gain=200.0)
  rec = wfdb_io.read_wfdb(path)
  assert (rec.signal[100:110, schema.lead_index("V1")] == schema.INT16_NAN).all()
  ref = wfdb.rdrecord(str(path)).p_signal
  got = rec.physical()[:, [1, 6, 7]]
  np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
  np.testing.assert_array_equal(got[~np.isnan(got)], ref[~np.isnan(ref)].astype(np.float32))
  assert rec.lead_present.sum() == 3
  assert rec.flags[br.MISSING_LEADS].startswith("I,III,aVR")


def test_microvolt_units_become_per_mv_gain(tmp_path):
  x = _ramp(5000, 2) * 1000  # uV
  path = _write(tmp_path, "uv", x, leads=["I", "II"], gain=1.0, units="uV")
  rec = wfdb_io.read_wfdb(path)
  assert rec.gain[0] == 1000.0
  np.testing.assert_allclose(
    rec.physical()[:, :2], wfdb.rdrecord(str(path)).p_signal / 1000, atol=1e-6
  )


def test_resample_carries_nan_gaps():
  x = np.sin(np.linspace(0, 20, 2570))[:, None].repeat(2, 1)
  x[1000:1100, 0] = np.nan
  x[:, 1] = np.nan
  y = signal.resample(x, 257, 500, axis=0, padtype="line", bridge_nan=True)
  assert y.shape == (5000, 2)
  gap = np.flatnonzero(np.isnan(y[:, 0]))
  assert 1940 <= gap.min() <= 1950 and 2135 <= gap.max() <= 2145
  assert np.isnan(y[:, 1]).all()
  assert signal.resample_ratio(257, 500) == (500, 257)


def test_quantise_clips_and_counts():
  q, clipped = wfdb_io.quantise(np.array([[0.0], [40.0], [-40.0], [np.nan], [0.0015]]))
  assert q[:, 0].tolist() == [0, 32767, -32767, schema.INT16_NAN, 2]
  assert clipped == 2


def _ecg(signal, fs=500.0):
  return wfdb_io.Ecg(
    record_name="r",
    signal=signal,
    gain=np.full(12, 1000, np.float32),
    baseline=np.zeros(12, np.float32),
    lead_present=np.ones(12, bool),
    sampling_rate=fs,
    native_sampling_rate=fs,
    comments=[],
    flags={},
  )


def test_cut_windows_first_all_and_short():
  sig = np.random.default_rng(0).integers(-500, 500, (12_345, 12)).astype(np.int16)
  assert [w.index for w in windows.cut_windows(_ecg(sig))] == [0]
  every = windows.cut_windows(_ecg(sig), windows="all")
  assert [w.index for w in every] == [0, 1]
  np.testing.assert_array_equal(every[1].signal, sig[5000:10000])
  with pytest.raises(br.RecordError) as e:
    windows.cut_windows(_ecg(sig[:4999]))
  assert e.value.reason == br.TOO_SHORT
  rec = _ecg(sig[:4000])
  (padded,) = windows.cut_windows(rec, short_records="pad")
  assert padded.signal.shape == (5000, 12) and (padded.signal[4000:] == 0).all()
  assert rec.flags[br.ZERO_PADDED] == "4000 -> 5000 samples"


def test_cut_windows_masks_nan_and_flat_leads():
  sig = np.random.default_rng(0).integers(-500, 500, (10_000, 12)).astype(np.int16)
  sig[:, 2] = schema.INT16_NAN  # All-NaN lead.
  sig[:, 7] = 123  # Flat lead.
  sig[5000:, :] = schema.INT16_NAN
  sig[5000:, 0] = 7  # Second window: only a flat lead left.
  rec = _ecg(sig)
  (window,) = windows.cut_windows(rec, windows="all")
  assert window.index == 0
  assert window.lead_mask.tolist() == [i not in (2, 7) for i in range(12)]
  assert rec.flags[br.ALL_NAN_LEAD].startswith("w0:III; w1:II,III")
  assert rec.flags[br.FLAT_LEAD] == "w0:V2; w1:I"
  assert rec.flags[br.WINDOW_DROPPED] == "w1"
  sig[:5000] = 5
  with pytest.raises(br.RecordError) as e:
    windows.cut_windows(_ecg(sig), windows="all")
  assert e.value.reason == br.ALL_LEADS_MISSING


def test_header_comment_parsing():
  fields = parsing.parse_header_comments(["Age: 78", "Sex: Male", "Dx: 1,2", "no colon", "age: 5"])
  assert fields == {"age": "78", "sex": "Male", "dx": "1,2"}
  assert parsing.parse_age("78") == (78.0, True)
  assert np.isnan(parsing.parse_age("NaN")[0]) and parsing.parse_age("NaN")[1]
  assert not parsing.parse_age("old")[1]
  assert parsing.parse_sex("female") == ("F", True)
  assert parsing.parse_sex("Unknown") == (None, True)
  assert parsing.parse_sex("x") == (None, False)


@pytest.mark.parametrize(
  "case, reason",
  [
    ("truncated", br.TRUNCATED_SIGNAL),
    ("no_dat", br.MISSING_SIGNAL_FILE),
    ("bad_header", br.MALFORMED_HEADER),
    ("no_header", br.MISSING_HEADER),
    ("fs_zero", br.UNSUPPORTED_SAMPLING_RATE),
    ("unknown_leads", br.NO_STANDARD_LEADS),
    ("negative_gain", br.MALFORMED_HEADER),
  ],
)
def test_read_wfdb_raises_record_errors(tmp_path, case, reason):
  path = _write(tmp_path, "r", _ramp(5000, 3), leads=["I", "II", "V1"])
  hea, dat = path.with_suffix(".hea"), path.with_suffix(".dat")
  if case == "truncated":
    dat.write_bytes(dat.read_bytes()[:1001])
  elif case == "no_dat":
    dat.unlink()
  elif case == "bad_header":
    hea.write_text("r 3 abc 5000\nthis is not a signal line\n")
  elif case == "no_header":
    hea.unlink()
  elif case == "fs_zero":
    hea.write_text(hea.read_text().replace("r 3 500 5000", "r 3 0 5000"))
  elif case == "unknown_leads":
    text = hea.read_text()
    for old, new in ((" I\n", " foo\n"), (" II\n", " bar\n"), (" V1\n", " baz\n")):
      text = text.replace(old, new)
    hea.write_text(text)
  elif case == "negative_gain":  # (A gain of 0 is WFDB's "uncalibrated", read as 200.)
    hea.write_text(hea.read_text().replace("1000.0(0)/mV", "-5(0)/mV", 1))
  with pytest.raises(br.RecordError) as e:
    wfdb_io.read_wfdb(path)
  assert e.value.reason == reason, e.value


_HEADER_FIELDS = (
  "record_name",
  "n_sig",
  "fs",
  "sig_len",
  "file_name",
  "fmt",
  "samps_per_frame",
  "skew",
  "byte_offset",
  "adc_gain",
  "baseline",
  "units",
  "sig_name",
  "comments",
)


def test_fast_header_parser_equals_wfdb(shared_data, tmp_path):
  """`_parse_header_text` (the fast path) gives wfdb.rdheader's fields, or defers to it."""
  variants = {
    "plain": "r 2 500 10\nr.dat 16 200(0)/mV 16 0 1 2 0 I\nr.dat 16 200(0)/mV 16 0 3 4 0 II\n",
    "no_units_baseline": "r 1 1000 10\nr.dat 16 2000 16 5 0 0 0 v1\n",
    "uv_spaces": "r 1 250.5 10 10:00:00\n# Age: 5\nr.dat 16 1.5(-3)/uV 12 0 0 0 0 lead II x\n#x\n",
    "mat": "r 1 500 10\nr.mat 16x1+24 1000.0(0)/mV 16 0 -68 1250 0 aVR\n# Dx: 1,2\n",
  }
  deferred = {
    "no_siglen": "r 1 500\nr.dat 16 200(0)/mV 16 0 0 0 0 I\n",
    "short_line": "r 1 500 10\nr.dat 16 200\n",
    "zero_gain": "r 1 500 10\nr.dat 16 0(0)/mV 16 0 0 0 0 I\n",
    "multi_segment": "r/2 1 500 10\nseg1 5\nseg2 5\n",
  }
  paths = sorted(shared_data.glob("*/*.hea"))
  for name, text in variants.items():
    (tmp_path / name).mkdir()
    (tmp_path / name / "r.hea").write_text(text)
    paths.append(tmp_path / name / "r.hea")
  for path in paths:
    fast = wfdb_header._parse_header_text(path.read_text())
    assert fast is not None, path
    ref = wfdb.rdheader(str(path.with_suffix("")))
    for field in _HEADER_FIELDS:
      assert getattr(fast, field) == getattr(ref, field), (path, field)
  for text in deferred.values():
    assert wfdb_header._parse_header_text(text) is None


def test_read_single_lead_reads_a_sample_range_of_the_named_channel(tmp_path, monkeypatch):
  x = _ramp(3000, 3, seed=4)
  path = _write(tmp_path, "m", x, leads=["Pleth", "II", "V1"], fs=250)
  reads = []
  rdrecord = wfdb.rdrecord
  monkeypatch.setattr(wfdb, "rdrecord", lambda *a, **k: reads.append(k) or rdrecord(*a, **k))
  rec = wfdb_io.read_single_lead(path, lead="ii", sampfrom=1000, sampto=9999)
  assert [(k["sampfrom"], k["sampto"], k["channels"]) for k in reads] == [(1000, 3000, [1])]
  ref = rdrecord(str(path), sampfrom=1000, channels=[1]).p_signal[:, 0]
  np.testing.assert_array_equal(rec.physical()[:, 1], ref.astype(np.float32))
  assert rec.lead_present.tolist() == [False, True] + [False] * 10 and rec.sampling_rate == 250
  up = wfdb_io.read_single_lead(path, lead="II", sampto=500, sampling_rate=500)
  assert up.signal.shape == (1000, 12) and br.RESAMPLED in up.flags
  # A one-channel record is read whatever its channel is called.
  one = _write(tmp_path, "one", x[:, :1], leads=["ECG"], fs=250)
  assert wfdb_io.read_single_lead(one, lead="I", sampto=10).lead_present[0]
  with pytest.raises(br.RecordError) as e:
    wfdb_io.read_single_lead(path, lead="I")
  assert e.value.reason == br.NO_STANDARD_LEADS
  with pytest.raises(br.RecordError) as e:
    wfdb_io.read_single_lead(path, lead="II", sampfrom=3000)
  assert e.value.reason == br.TOO_SHORT
