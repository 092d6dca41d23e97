"""Tests for `clef_jax.readers`: every input kind against files written by independent code."""

import hostile
import numpy as np
import pytest

from clef_jax import model_inputs, readers
from clef_jax.data import wfdb_io
from clef_jax.readers import core

wfdb = pytest.importorskip("wfdb")


def _one(path, **kw):
  items = list(readers.open_inputs(path, **kw))
  assert len(items) == 1
  if isinstance(items[0], readers.Skipped):
    raise readers.InputError(items[0].message, items[0].reason)
  return items[0]


# ------------------------------------------------------------------------------------------------
# Channel names and units.
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
  "name, lead",
  [
    ("MLII", "II"),
    ("ML2", "II"),
    ("mlii", "II"),
    ("Lead I", "I"),
    ("ECG I", "I"),
    ("ECG Lead II", "II"),
    ("EKG-III", "III"),
    ("DII", "II"),
    ("D1", "I"),
    ("Lead 2", "II"),
    ("avf", "aVF"),
    ("V5", "V5"),
    ("I", "I"),
    ("Lead_III", "III"),
  ],
)
def test_standard_lead_aliases(name, lead):
  assert core.standard_lead(name) == lead


@pytest.mark.parametrize("name", ["ECG", "ECG1", "ECG 2", "Resp", "Pleth", "X", "1", "CH2"])
def test_names_that_are_no_lead(name):
  assert core.standard_lead(name) is None


def test_choose_channel_by_lead_alias_name_and_index():
  names = ["MLII", "V5"]
  c = core.choose_channel(names, where="100.hea", lead="II")
  assert (c.index, c.name, c.lead) == (0, "MLII", "II") and "read as lead II" in c.note
  assert core.choose_channel(names, where="f", channel="v5").index == 1  # the file's own name
  assert core.choose_channel(names, where="f", channel="1").index == 1  # an index
  assert core.choose_channel(["ECG"], where="f").note.endswith("only channel 'ECG'")
  with pytest.raises(core.InputError, match="no lead I and several channels"):
    core.choose_channel(names, where="f")
  with pytest.raises(core.InputError, match="no lead V1"):
    core.choose_channel(names, where="f", lead="V1")
  with pytest.raises(core.InputError, match="out of range"):
    core.choose_channel(names, where="f", channel=2)
  with pytest.raises(core.InputError, match="several channels are lead II"):
    core.choose_channel(["MLII", "II"], where="f", lead="II")
  with pytest.raises(core.InputError, match="not the --lead"):
    core.choose_channel(names, where="f", channel="V5", lead="II")


def test_unit_scales():
  assert core.unit_scale("uV", where="f") == 1e-3
  assert core.unit_scale("µV", where="f") == 1e-3  # micro sign (Apple)
  assert core.unit_scale("μV", where="f") == 1e-3  # Greek mu
  assert core.unit_scale(" mV ", where="f") == 1.0
  assert core.unit_scale("V", where="f") == 1e3
  with pytest.raises(core.InputError, match="unknown signal unit 'mmHg'.*--unit"):
    core.unit_scale("mmHg", where="f")
  with pytest.raises(core.InputError, match="unknown signal unit ''"):
    core.unit_scale("", where="f")


# ------------------------------------------------------------------------------------------------
# WFDB.
# ------------------------------------------------------------------------------------------------
def _wrsamp(tmp_path, name, x, fs=360, names=("MLII", "V5"), units=("mV", "uV"), fmt="212"):
  wfdb.wrsamp(
    name,
    fs=fs,
    units=list(units),
    sig_name=list(names),
    p_signal=x,
    fmt=[fmt] * x.shape[1],
    write_dir=str(tmp_path),
  )
  return tmp_path / name


def test_wfdb_record_as_name_hea_or_directory(tmp_path):
  x = np.stack([hostile.ecg_like(3600, 360.0), 1000 * hostile.ecg_like(3600, 360.0, 1)], 1)
  rec = _wrsamp(tmp_path, "100", x)
  ref = wfdb.rdrecord(str(rec)).p_signal
  for path in (rec, rec.with_suffix(".hea"), tmp_path):
    r = _one(path, lead="II")
    assert (r.id, r.channel, r.lead, r.fs, r.n_samples) == ("100", "MLII", "II", 360.0, 3600)
    np.testing.assert_allclose(r.read(100, 900), ref[100:900, 0])
  v5 = _one(rec, channel="V5")
  assert v5.lead == "V5"
  np.testing.assert_allclose(v5.read(0, 3600), ref[:, 1] / 1000)  # uV -> mV
  np.testing.assert_allclose(v5.read(0, 3600), x[:, 1] / 1000, atol=2e-3)
  with pytest.raises(readers.InputError, match="no lead I and several channels"):
    _one(rec)


def test_wfdb_multi_segment_variable_layout(tmp_path):
  """Segments written by wfdb.wrsamp, master and layout headers by hand (WFDB header spec)."""
  s1 = hostile.ecg_like(1000, 250.0, 1)[:, None]
  s2 = np.stack([hostile.ecg_like(700, 250.0, 2), hostile.ecg_like(700, 250.0, 3)], 1)
  _wrsamp(tmp_path, "m_1", s1, fs=250, names=("MLII",), units=("mV",), fmt="16")
  _wrsamp(tmp_path, "m_2", s2, fs=250, names=("V1", "MLII"), units=("mV", "mV"), fmt="16")
  (tmp_path / "m_0.hea").write_text(
    "m_0 2 250 0\n~ 16 200/mV 16 0 0 0 0 MLII\n~ 16 200/mV 16 0 0 0 0 V1\n"
  )
  (tmp_path / "m.hea").write_text("m/4 2 250 2000\nm_0 0\nm_1 1000\n~ 300\nm_2 700\n")
  r = _one(tmp_path / "m", lead="II")
  assert (r.channel, r.fs, r.n_samples) == ("MLII", 250.0, 2000)
  full = r.read(0, 2000)
  np.testing.assert_allclose(full[:1000], wfdb.rdrecord(str(tmp_path / "m_1")).p_signal[:, 0])
  assert np.isnan(full[1000:1300]).all()  # the null segment
  np.testing.assert_allclose(full[1300:], wfdb.rdrecord(str(tmp_path / "m_2")).p_signal[:, 1])
  np.testing.assert_allclose(r.read(900, 1400), full[900:1400])  # a range across three
  v1 = _one(tmp_path / "m", channel="V1").read(0, 2000)
  assert np.isnan(v1[:1300]).all() and np.isfinite(v1[1300:]).all()  # absent in segment 1
  found = readers.find_inputs(tmp_path)  # segments are no records
  assert [s.id for s in found] == ["m"]


def test_wfdb_non_utf8_comments_read(tmp_path):
  cases = hostile.write_all(tmp_path)
  r = _one(cases["latin1_comments"].args[1])
  assert r.fs == 250.0 and np.isfinite(r.read(0, 3000)).all()


# ------------------------------------------------------------------------------------------------
# EDF / BDF (written by edfio, read by pyEDFlib).
# ------------------------------------------------------------------------------------------------
def test_edf_and_bdf_by_label_with_units(tmp_path):
  edfio = pytest.importorskip("edfio")
  x_uv = 1000 * hostile.ecg_like(256 * 30, 256.0)
  resp = hostile.ecg_like(64 * 30, 64.0, 5)
  edfio.Edf(
    [
      edfio.EdfSignal(resp, sampling_frequency=64, label="Resp", physical_dimension="V"),
      edfio.EdfSignal(x_uv, sampling_frequency=256, label="ECG II", physical_dimension="uV"),
    ]
  ).write(tmp_path / "h.edf")
  with _one(tmp_path / "h.edf", lead="II") as r:
    assert (r.channel, r.lead, r.fs, r.n_samples) == ("ECG II", "II", 256.0, 256 * 30)
    # EDF stores 16-bit values over the signal's range: error <= half a step.
    step = (x_uv.max() - x_uv.min()) / 65535 / 1000
    np.testing.assert_allclose(r.read(1000, 3000), x_uv[1000:3000] / 1000, atol=step)
  with _one(tmp_path / "h.edf", channel="Resp") as r:
    assert r.fs == 64.0
  with _one(tmp_path / "h.edf", channel=0) as r:
    assert r.channel == "Resp"
  edfio.Bdf(
    [edfio.BdfSignal(x_uv, sampling_frequency=256, label="EKG", physical_dimension="uV")]
  ).write(tmp_path / "h.bdf")
  with _one(tmp_path / "h.bdf") as b:
    assert b.channel == "EKG" and b.lead is None  # the only channel, no standard lead
    np.testing.assert_allclose(b.read(0, 256 * 30), x_uv / 1000, atol=step / 256)


def test_edf_without_unit_needs_unit(tmp_path):
  edfio = pytest.importorskip("edfio")
  edfio.Edf(
    [edfio.EdfSignal(hostile.ecg_like(2560, 256.0), sampling_frequency=256, label="ECG I")]
  ).write(tmp_path / "u.edf")
  with pytest.raises(readers.InputError, match="unknown signal unit ''"):
    _one(tmp_path / "u.edf")
  with _one(tmp_path / "u.edf", unit="mV") as r:
    assert r.lead == "I"


# ------------------------------------------------------------------------------------------------
# Apple Health export, plain CSV, .npy.
# ------------------------------------------------------------------------------------------------
def test_apple_health_csv(tmp_path):
  x_uv = 1000 * hostile.ecg_like(512 * 30, 512.0)
  (tmp_path / "ecg_2024-05-01.csv").write_text(hostile.apple_csv(x_uv), encoding="utf-8")
  r = _one(tmp_path / "ecg_2024-05-01.csv")
  assert (r.channel, r.lead, r.fs, r.n_samples) == ("Lead I", "I", 512.0, 512 * 30)
  np.testing.assert_allclose(r.read(0, r.n_samples), x_uv / 1000, atol=1e-6)
  assert "read as lead I" in r.notes[0]
  with pytest.raises(readers.InputError, match="no lead II"):
    _one(tmp_path / "ecg_2024-05-01.csv", lead="II")
  (tmp_path / "bad.csv").write_text(hostile.apple_csv(x_uv[:100], unit="counts"))
  with pytest.raises(readers.InputError, match="unknown signal unit 'counts'"):
    _one(tmp_path / "bad.csv")
  (tmp_path / "zero.csv").write_text(hostile.apple_csv(x_uv[:100], rate="0 hertz"))
  with pytest.raises(readers.InputError, match="0 Hz is not usable .*Sample Rate line or pass"):
    _one(tmp_path / "zero.csv")
  (tmp_path / "odd.csv").write_text(hostile.apple_csv(x_uv, rate="fast"))
  with pytest.raises(readers.InputError, match="unreadable sample rate 'fast'; pass --fs"):
    _one(tmp_path / "odd.csv")
  assert _one(tmp_path / "odd.csv", fs=512).fs == 512.0  # --fs replaces the file's rate


def test_plain_csv_and_npy(tmp_path):
  x = hostile.ecg_like(2500, 250.0)
  rows = "".join(f"{a:.6f},{b:.6f}\n" for a, b in zip(x, 2 * x))
  (tmp_path / "p.csv").write_text("ECG1,Lead II\n" + rows)
  r = _one(tmp_path / "p.csv", channel="ECG1", fs=250, unit="uV")
  assert (r.channel, r.fs) == ("ECG1", 250.0) and r.notes == []
  np.testing.assert_allclose(r.read(0, 2500), x / 1000, atol=1e-9)
  np.testing.assert_allclose(
    _one(tmp_path / "p.csv", lead="II", fs=250, unit="mV").read(0, 10), 2 * x[:10], atol=1e-6
  )
  # Neither the rate nor the unit is guessed: a wrong rate would embed silently wrong signals.
  with pytest.raises(readers.InputError, match=r"p.csv: a plain CSV .* pass --fs HZ and --unit"):
    _one(tmp_path / "p.csv", lead="II")
  with pytest.raises(readers.InputError, match=r"pass --unit \(uV, mV or V\)\.$"):
    _one(tmp_path / "p.csv", lead="II", fs=250)
  a = np.stack([x, -x]).astype(np.float32)
  np.save(tmp_path / "a.npy", a)
  with pytest.raises(readers.InputError, match=r"a.npy: a .npy array .* pass --fs HZ\.$"):
    _one(tmp_path / "a.npy", unit="mV")
  items = list(readers.open_inputs(tmp_path / "a.npy", fs=250, unit="mV"))
  assert [i.id for i in items] == ["0", "1"]
  np.testing.assert_allclose(items[1].read(0, 2500), -x, atol=1e-6)


def test_npy_input_first_window(tmp_path):
  a = np.random.default_rng(0).standard_normal((3, 2600, 12)).astype(np.float32)
  np.save(tmp_path / "x.npy", a)
  x, ids, errors = model_inputs.read_inputs(
    tmp_path / "x.npy", lead="II", window=1000, fs=500, unit="mV"
  )
  assert x.shape == (3, 1000) and ids == ["0", "1", "2"] and not errors
  np.testing.assert_allclose(
    x[1], model_inputs.input_contract(a[1, :, 1], 500.0, window=1000), atol=1e-6
  )


def test_real_records_match_the_builders_reader(shared_data):
  """The reader layer's first window equals `wfdb_io.read_wfdb` + the input contract (500 Hz)."""
  heas = sorted((shared_data / "cinc2021").glob("*.hea"))[:4]
  for hea in heas:
    r = _one(hea, lead="I")
    ref = wfdb_io.read_wfdb(hea.with_suffix("")).physical()[:, 0]
    (_, x, _), *_ = readers.iter_windows(r, readers.Windowing())
    np.testing.assert_allclose(
      model_inputs.input_contract(x, r.fs), model_inputs.input_contract(ref, 500.0), atol=1e-6
    )
    x, _, _ = model_inputs.read_inputs(hea, lead="I")
    np.testing.assert_allclose(x[0], model_inputs.input_contract(ref, 500.0), atol=1e-6)


# ------------------------------------------------------------------------------------------------
# Windows.
# ------------------------------------------------------------------------------------------------
def test_window_positions_reasons_and_tail():
  fs = 250.0
  x = hostile.ecg_like(int(65 * fs), fs)  # 65 s
  x[int(20 * fs) : int(28 * fs)] = np.nan  # window 2: 80 % missing
  x[int(30 * fs) : int(40 * fs)] = 0.3  # window 3: flat
  rec = readers.from_array(x, fs=fs)
  got = list(readers.iter_windows(rec, readers.Windowing()))
  assert [(s.start_s, s.end_s, reason) for s, _, reason in got] == [
    (0.0, 10.0, None),
    (10.0, 20.0, None),
    (20.0, 30.0, "missing"),
    (30.0, 40.0, "flat"),
    (40.0, 50.0, None),
    (50.0, 60.0, None),
    (60.0, 65.0, None),
  ]  # 5 s tail = min_s: kept
  # The kept samples are the input contract's read span of the window.
  span, chunk, _ = got[1]
  np.testing.assert_array_equal(chunk, x[2500 : 2500 + 2501].astype(np.float32))
  got = list(readers.iter_windows(rec, readers.Windowing(window_s=10, hop_s=5, min_s=8)))
  assert [s.start_s for s, _, _ in got] == [0, 5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 55]
  assert got[-1][2] is None  # 55-65 s is a full window
  got = list(readers.iter_windows(rec, readers.Windowing(min_s=8)))
  assert [(s.start_s, r) for s, _, r in got][-1] == (60.0, "short")  # 5 s < 8 s: counted
  got = list(readers.iter_windows(rec, readers.Windowing(max_windows=2)))
  assert len(got) == 2
  short = readers.from_array(x[:100], fs=fs)
  assert [r for _, _, r in readers.iter_windows(short, readers.Windowing())] == ["short"]


def test_windows_are_streamed_in_bounded_chunks():
  """A 24-hour recording is read block by block, never whole."""
  fs, n = 250.0, int(24 * 3600 * 250)
  calls = []

  def reader(start, stop):
    calls.append((start, stop))
    t = np.arange(start, stop) / fs
    return np.sin(2 * np.pi * 1.1 * t)

  rec = core.Recording(
    id="holter",
    path=core.pathlib.Path("holter"),
    channel="ECG",
    lead=None,
    fs=fs,
    n_samples=n,
    reader=reader,
  )
  w = readers.Windowing(max_windows=300, block_windows=32)
  windows = list(readers.iter_windows(rec, w))
  assert len(windows) == 300 and all(r is None for _, _, r in windows)
  bound = readers.max_chunk_samples(fs, w)
  assert bound < 32 * 2600 and max(b - a for a, b in calls) <= bound
  assert calls[0][0] == 0 and len(calls) == 10  # ceil(300 / 32) reads
  assert all(b2 >= a2 for (a2, _), (_, b2) in zip(calls[1:], calls))  # in order


def test_windowing_arguments_are_checked():
  for kw, flag in (
    ({"window_s": 0}, "--window_s"),
    ({"window_s": float("nan")}, "--window_s"),
    ({"window_s": 0.5}, r"--window_s 0.5: must be .* in \[1, 3600\]"),
    ({"min_s": 0.1}, r"--min_s 0.1: must be in \[0.5, window_s\]"),
    ({"hop_s": -1.0}, "--hop_s"),
    ({"min_s": 20.0}, "--min_s"),
    ({"max_missing": 1.0}, "--max_missing"),
    ({"max_windows": 0}, "--max_windows"),
  ):
    with pytest.raises(readers.InputError, match=flag):
      readers.Windowing(**kw)


def test_real_ptb_record_lower_case_names_at_1000_hz(shared_data):
  """PTB's `ii` channel at 1000 Hz, picked by lead and by the file's own name and index."""
  rec = shared_data / "ptb_diagnostic" / "s0010_re"
  ref = wfdb.rdrecord(str(rec))
  j = ref.sig_name.index("ii")
  by_lead = _one(rec, lead="II")
  assert (by_lead.channel, by_lead.lead, by_lead.fs, by_lead.n_samples) == (
    "ii",
    "II",
    1000.0,
    38400,
  )
  assert by_lead.notes == [f"{rec}.hea: channel 'ii' read as lead II"]
  np.testing.assert_allclose(by_lead.read(1000, 21000), ref.p_signal[1000:21000, j])
  for channel in ("II", str(j)):
    np.testing.assert_array_equal(_one(rec, channel=channel).read(0, 500), by_lead.read(0, 500))
  assert any("age" in c.lower() for c in by_lead.comments)


def test_evaluate_reads_wfdb_through_the_reader_layer(tmp_path):
  """`evaluate`'s WFDB source: aliases apply, segments of multi-segment records are not records."""
  from clef_jax.evaluation import records

  x = hostile.ecg_like(2500, 250.0)[:, None]
  _wrsamp(tmp_path, "holter", x, fs=250, names=("MLII",), units=("mV",), fmt="16")
  (tmp_path / "holter.hea").write_text(
    (tmp_path / "holter.hea").read_text() + "# Age: 61\n# Sex: Female\n"
  )
  _wrsamp(tmp_path, "m_1", x[:1500], fs=250, names=("II",), units=("mV",), fmt="16")
  _wrsamp(tmp_path, "m_2", x[1500:], fs=250, names=("II",), units=("mV",), fmt="16")
  (tmp_path / "m.hea").write_text("m/2 1 250 2500\nm_1 1500\nm_2 1000\n")
  _wrsamp(tmp_path, "v5", x, fs=250, names=("V5",), units=("mV",), fmt="16")
  got = records.read_wfdb_records(tmp_path, lead="II", window=2500)
  assert got.ids == ["holter", "m"] and got.fields["age"][0] == 61.0
  assert got.fields["sex"][0] == "F"
  assert (
    len(got.skipped) == 1 and got.skipped[0].startswith("v5: ") and "no lead II" in got.skipped[0]
  )
  ref = model_inputs.input_contract(
    wfdb.rdrecord(str(tmp_path / "holter")).p_signal[:, 0].astype(np.float32), 250.0, window=2500
  )
  np.testing.assert_allclose(got.x[0], ref, atol=1e-6)
  stitched = np.concatenate(
    [wfdb.rdrecord(str(tmp_path / n)).p_signal[:, 0] for n in ("m_1", "m_2")]
  )
  np.testing.assert_allclose(
    got.x[1],
    model_inputs.input_contract(stitched.astype(np.float32), 250.0, window=2500),
    atol=1e-6,
  )
