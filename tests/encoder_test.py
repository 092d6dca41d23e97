"""Tests for `clef_jax.Encoder` and the embed CLI over it: windows, index, hostile inputs."""

import csv
import os
import pathlib
import subprocess
import sys

import hostile
import numpy as np
import pytest

from clef_jax import embed, encoder, model_inputs, readers

wfdb = pytest.importorskip("wfdb")

W = 2.0  # Seconds per window in most tests: a small model input keeps CPU compiles short.


@pytest.fixture(scope="module")
def enc(fast_compiles_module):
  import jax
  import jax.numpy as jnp

  from clef_jax import models

  model = models.create_backbone("net1d", "small")
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 1)))["params"]
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda s: (0.1 * rng.standard_normal(s.shape)).astype(np.float32), shapes)
  return encoder.Encoder(model, params, backbone="net1d", size="small", batch_size=8)


@pytest.fixture(scope="module")
def weights(enc, tmp_path_factory):
  pytest.importorskip("torch")
  from clef_jax import weights as weights_lib

  path = tmp_path_factory.mktemp("w") / "w.ckpt"
  weights_lib.save_backbone(enc.params, path, backbone="net1d", size="small")
  return path


def _reference(enc, x, fs, starts, window_s=W):
  """Windows cut with numpy slicing, each through the input contract, then the backbone."""
  n = int(np.ceil(window_s * 500 * fs / 500)) + 1
  inputs = [
    model_inputs.input_contract(x[s : s + n].astype(np.float32), fs, window=int(window_s * 500))
    for s in starts
  ]
  return enc.embed_windows(np.stack(inputs))


def test_embed_array_windows_and_mean(enc):
  fs = 360.0
  x = hostile.ecg_like(int(8.5 * fs), fs)  # 4 windows of 2 s; the 0.5 s tail is skipped
  z = enc.embed(x, fs=fs, window_s=W)
  assert z.shape == (4, 256) and z.dtype == np.float32
  ref = _reference(enc, x, fs, [0, 720, 1440, 2160])
  np.testing.assert_allclose(z, ref, rtol=1e-5, atol=1e-5)
  zm = enc.embed(x * 1000, fs=fs, unit="uV", window_s=W, aggregate="mean")
  np.testing.assert_allclose(zm, ref.mean(0, keepdims=True), rtol=1e-4, atol=1e-5)
  z = enc.embed(x, fs=fs, window_s=W, hop_s=1.0, max_windows=3)
  np.testing.assert_allclose(z, _reference(enc, x, fs, [0, 360, 720]), rtol=1e-5, atol=1e-5)
  with pytest.raises(readers.InputError, match="flat"):
    enc.embed(np.zeros(5000), fs=500, window_s=W)
  with pytest.raises(readers.InputError, match="sampling rate"):
    enc.embed(x, fs=0)


def test_embed_file_wfdb_multi_segment_edf_and_apple(enc, tmp_path):
  fs = 250
  s1 = hostile.ecg_like(1500, fs, 1)[:, None]
  s2 = hostile.ecg_like(1000, fs, 2)[:, None]
  for name, s in (("m_1", s1), ("m_2", s2)):
    wfdb.wrsamp(
      name, fs=fs, units=["mV"], sig_name=["MLII"], p_signal=s, fmt=["16"], write_dir=str(tmp_path)
    )
  (tmp_path / "m.hea").write_text("m/2 1 250 2500\nm_1 1500\nm_2 1000\n")
  out = enc.embed_file(tmp_path / "m", lead="II", window_s=W)
  assert out.vectors.shape == (5, 256)
  assert [(s.record, s.channel, s.start_s, s.end_s) for s in out.index] == [
    ("m", "MLII", 2.0 * k, 2.0 * k + 2) for k in range(5)
  ]
  x = np.concatenate([wfdb.rdrecord(str(tmp_path / n)).p_signal[:, 0] for n in ("m_1", "m_2")])
  # Window 2 (4-6 s) spans the segment boundary at 6 s: reading must stitch the two files.
  np.testing.assert_allclose(
    out.vectors, _reference(enc, x, fs, range(0, 2500, 500)), rtol=1e-4, atol=1e-4
  )

  edfio = pytest.importorskip("edfio")
  y = hostile.ecg_like(256 * 6, 256.0, 3)
  edfio.Edf(
    [edfio.EdfSignal(y * 1000, sampling_frequency=256, label="ECG I", physical_dimension="uV")]
  ).write(tmp_path / "e.edf")
  out = enc.embed_file(tmp_path / "e.edf", window_s=W)
  assert out.vectors.shape == (3, 256) and [s.fs_native for s in out.index] == [256.0] * 3
  np.testing.assert_allclose(
    out.vectors, _reference(enc, y, 256.0, [0, 512, 1024]), rtol=1e-3, atol=1e-3
  )  # EDF's 16-bit storage

  a = hostile.ecg_like(512 * 30, 512.0, 4) * 1000
  (tmp_path / "ecg_2024-05-01.csv").write_text(hostile.apple_csv(a), encoding="utf-8")
  out = enc.embed_file(tmp_path / "ecg_2024-05-01.csv")
  assert out.vectors.shape == (3, 256)  # 30 s -> 3 x 10 s
  assert [(s.channel, s.start_s, s.fs_native) for s in out.index] == [
    ("Lead I", 0.0, 512.0),
    ("Lead I", 10.0, 512.0),
    ("Lead I", 20.0, 512.0),
  ]
  np.testing.assert_allclose(
    out.vectors,
    _reference(enc, a / 1000, 512.0, [0, 5120, 10240], window_s=10.0),
    rtol=1e-4,
    atol=1e-4,
  )


def test_skips_are_counted_and_bad_records_dropped(enc, tmp_path):
  cases = hostile.write_all(tmp_path / "h")
  d = tmp_path / "mixed"
  d.mkdir()
  for name in ("all_zero", "nan_only", "truncated_dat", "latin1_comments"):
    for suffix in (".hea", ".dat"):
      (d / f"{name}{suffix}").write_bytes((tmp_path / "h" / f"{name}{suffix}").read_bytes())
  lines = []
  out = enc.embed_file(d, window_s=W, log=lines.append)
  assert {s.record for s in out.index} == {"latin1_comments"} and out.vectors.shape[0] == 6
  assert {s.id: s.reason for s in out.skipped_records} == {
    "all_zero": "flat",
    "nan_only": "missing",
    "truncated_dat": "truncated",
  }
  assert out.skipped_windows == {"flat": 6, "missing": 6}
  assert sum(line.startswith("skipped ") for line in lines) == 3
  del cases


def _run(argv, capsys):
  try:
    rc = embed.main([str(a) for a in argv])
  except SystemExit as e:  # argparse
    rc = e.code
  out = capsys.readouterr()
  return rc, out.out, out.err


def test_cli_windows_index_aggregate_and_outputs(enc, weights, tmp_path, capsys):
  fs = 360
  x = np.stack([hostile.ecg_like(fs * 65, fs), hostile.ecg_like(fs * 65, fs, 7)], 1)
  wfdb.wrsamp(
    "100",
    fs=fs,
    units=["mV", "mV"],
    sig_name=["MLII", "V5"],
    p_signal=x,
    fmt=["212", "212"],
    write_dir=str(tmp_path),
  )
  base = ["--torch_weights", weights, "--size", "small", "--batch_size", 8, "--window_s", W]
  out = tmp_path / "o" / "emb.npy"  # a directory that does not exist yet
  rc, stdout, err = _run(
    base + ["--input", tmp_path / "100", "--lead", "MLII", "--output", out, "--max_windows", 20],
    capsys,
  )
  assert rc == 0, err
  assert "channel 'MLII' read as lead II" in err and "Traceback" not in err
  assert "embed: 1/1 records, 20 windows, " in err and " windows/s, ETA " in err  # progress
  z = np.load(out)
  assert z.shape == (20, 256) and "20 windows" in stdout
  with open(f"{out}.index.csv") as f:
    rows = list(csv.DictReader(f))
  assert list(rows[0]) == ["record", "channel", "start_s", "end_s", "fs_native"]
  assert [
    (r["record"], r["channel"], float(r["start_s"]), float(r["end_s"]), float(r["fs_native"]))
    for r in rows[:2]
  ] == [("100", "MLII", 0.0, 2.0, 360.0), ("100", "MLII", 2.0, 4.0, 360.0)]
  np.testing.assert_allclose(
    z,
    enc.embed_file(tmp_path / "100", lead="II", window_s=W, max_windows=20).vectors,
    rtol=1e-5,
    atol=1e-5,
  )
  # An existing output is never replaced unasked, and stays intact.
  before = out.read_bytes()
  rc, _, err = _run(
    base + ["--input", tmp_path / "100", "--channel", "V5", "--output", out], capsys
  )
  assert rc == 2 and "already exist" in err and "--overwrite" in err
  assert out.read_bytes() == before
  rc, _, err = _run(
    base
    + [
      "--input",
      tmp_path / "100",
      "--channel",
      "V5",
      "--output",
      out,
      "--overwrite",
      "--aggregate",
      "mean",
    ],
    capsys,
  )
  assert rc == 0, err
  z = np.load(out)
  with open(f"{out}.index.csv") as f:
    rows = list(csv.DictReader(f))
  assert z.shape == (1, 256)
  assert rows == [
    {
      "record": "100",
      "channel": "V5",
      "start_s": "0.0",
      "end_s": "65.0",
      "fs_native": "360.0",
      "windows": "33",
    }
  ]  # 32 x 2 s + 1 s tail
  assert not [p for p in out.parent.iterdir() if ".tmp" in p.name]  # no temporary left
  # Outputs that cannot be written fail before any embedding.
  blocker = tmp_path / "file"
  blocker.write_text("x")
  rc, _, err = _run(base + ["--input", tmp_path / "100", "--output", blocker / "emb.npy"], capsys)
  assert rc == 2 and "cannot create directory" in err and blocker.read_text() == "x"


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_cli_read_only_output_directory(weights, tmp_path, capsys, monkeypatch):
  ro = tmp_path / "ro"
  ro.mkdir()
  ro.chmod(0o500)
  if os.geteuid() == 0:  # root writes anywhere: let `os.access` answer as for a user
    access = os.access
    monkeypatch.setattr(
      embed.os, "access", lambda p, mode: access(p, mode) and pathlib.Path(p).absolute() != ro
    )
  np.save(tmp_path / "x.npy", hostile.ecg_like(5000, 500.0))
  rc, _, err = _run(
    [
      "--torch_weights",
      weights,
      "--size",
      "small",
      "--input",
      tmp_path / "x.npy",
      "--fs",
      500,
      "--unit",
      "mV",
      "--output",
      ro / "e.npy",
    ],
    capsys,
  )
  assert rc == 2 and "not writable" in err
  rc, _, err = _run(
    [
      "--torch_weights",
      weights,
      "--size",
      "small",
      "--input",
      tmp_path / "x.npy",
      "--fs",
      500,
      "--unit",
      "mV",
      "--output",
      ro / "new" / "e.npy",
    ],
    capsys,
  )
  assert rc == 2 and f"cannot create directory {ro / 'new'} ({ro} is not writable)" in err


def _case_names():
  import tempfile

  with tempfile.TemporaryDirectory() as d:
    return sorted(hostile.write_all(pathlib.Path(d)))


@pytest.mark.parametrize("name", _case_names())
def test_hostile_inputs(name, weights, tmp_path, capsys):
  """Every hostile file: the expected exit status, one error line, no traceback, no output."""
  case = hostile.write_all(tmp_path / "in")[name]
  out = tmp_path / "out" / "emb.npy"
  rc, stdout, err = _run(
    [
      "--torch_weights",
      weights,
      "--size",
      "small",
      "--quiet",
      "--batch_size",
      8,
      "--output",
      out,
      *case.args,
    ],
    capsys,
  )
  assert rc == case.code, err
  assert "Traceback" not in err + stdout
  if case.code:
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and case.says.lower() in errors[0].lower(), err
    assert not out.parent.exists()  # nothing written, not even the directory
  else:
    assert np.load(out).shape[1] == 256


@pytest.mark.slow
def test_cli_process_no_traceback_and_help(tmp_path):
  """As a user runs it: --help exits 0; bad input exits 1 with one line, in a fresh process."""
  env = dict(os.environ, PYTHONPATH=os.getcwd())
  r = subprocess.run(
    [sys.executable, "-m", "clef_jax.embed", "--help"],
    capture_output=True,
    text=True,
    env=env,
    timeout=120,
  )
  assert r.returncode == 0 and "--window_s" in r.stdout
  cases = hostile.write_all(tmp_path)
  r = subprocess.run(
    [
      sys.executable,
      "-m",
      "clef_jax.embed",
      "--torch_weights",
      "nope.ckpt",
      "--size",
      "small",
      "--output",
      tmp_path / "o.npy",
      *cases["fs_zero"].args,
    ],
    capture_output=True,
    text=True,
    env=env,
    timeout=120,
  )
  assert r.returncode == 1 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr


def test_import_clef_jax_stays_light():
  code = (
    "import sys, clef_jax; assert 'jax' not in sys.modules, 'jax imported'; "
    "assert callable(clef_jax.Encoder.load); print('ok')"
  )
  r = subprocess.run(
    [sys.executable, "-c", code],
    capture_output=True,
    text=True,
    timeout=120,
    env=dict(os.environ, PYTHONPATH=os.getcwd()),
  )
  assert r.stdout.strip() == "ok", r.stderr


def test_encoder_load_from_torch_file(enc, weights):
  loaded = encoder.Encoder.load(weights, size="small", batch_size=8)
  x = hostile.ecg_like(1000, 500.0)
  np.testing.assert_allclose(
    loaded.embed(x, fs=500, window_s=W), enc.embed(x, fs=500, window_s=W), rtol=1e-5, atol=1e-5
  )
  with pytest.raises(ValueError, match="needs its size"):
    encoder.Encoder.load(weights)


_FLAGS = {
  "--fs": "fs",
  "--unit": "unit",
  "--channel": "channel",
  "--lead": "lead",
  "--window_s": "window_s",
  "--hop_s": "hop_s",
}


@pytest.mark.parametrize("name", [n for n in _case_names() if n != "latin1_comments"])
def test_hostile_inputs_through_the_api(name, enc, tmp_path):
  """The same files through `Encoder.embed_file`: one `InputError` line naming the file."""
  case = hostile.write_all(tmp_path)[name]
  args = dict(zip(case.args[::2], case.args[1::2]))
  kwargs = {_FLAGS[k]: v for k, v in args.items() if k != "--input"}
  for key in ("fs", "window_s", "hop_s"):
    if key in kwargs:
      kwargs[key] = float(kwargs[key])
  with pytest.raises(readers.InputError) as e:
    enc.embed_file(args["--input"], **kwargs)
  message = str(e.value)
  assert "\n" not in message and case.says.lower() in message.lower(), message
  if not name.startswith("cli_"):  # argument errors name the flag, file errors the file
    assert pathlib.Path(args["--input"]).stem in message, message


@pytest.mark.parametrize(
  "signal, kwargs, says",
  [
    (np.zeros(5000), {"fs": 500}, "flat"),
    (np.full(5000, 3.2), {"fs": 500}, "flat"),
    (np.full(5000, np.nan), {"fs": 500}, "missing"),
    (hostile.ecg_like(100, 500.0), {"fs": 500}, "no window"),  # 0.2 s
    (hostile.ecg_like(5000, 500.0), {"fs": 0}, "sampling rate 0 Hz"),
    (hostile.ecg_like(5000, 500.0), {"fs": -500}, "sampling rate -500 Hz"),
    (hostile.ecg_like(5000, 500.0), {"fs": float("nan")}, "sampling rate nan Hz"),
    (hostile.ecg_like(5000, 500.0), {"fs": 5e4}, "sampling rate 50000 Hz"),
    (hostile.ecg_like(5000, 500.0), {"fs": "fast"}, "not a number"),
    (hostile.ecg_like(5000, 500.0), {"fs": 500, "unit": "mmHg"}, "unknown signal unit"),
    (hostile.ecg_like(5000, 500.0), {"fs": 500, "lead": "MLX"}, "not a standard lead"),
    (hostile.ecg_like(5000, 500.0), {"fs": 500, "window_s": 0}, "--window_s"),
    (np.zeros((2, 5000)), {"fs": 500}, "1-D real-valued"),
    (np.array(["1"] * 5000), {"fs": 500}, "1-D real-valued"),
    (np.array([object()] * 5000), {"fs": 500}, "1-D real-valued"),
    (np.ones(5000, bool), {"fs": 500}, "1-D real-valued"),
  ],
)
def test_hostile_arrays_through_the_api(enc, signal, kwargs, says):
  with pytest.raises(readers.InputError, match=says) as e:
    enc.embed(signal, window_s=W, **kwargs) if "window_s" not in kwargs else enc.embed(
      signal, **kwargs
    )
  assert "\n" not in str(e.value)


def test_progress_line_counts_rate_and_eta(monkeypatch):
  import io

  now = [100.0]
  monkeypatch.setattr(encoder.time, "monotonic", lambda: now[0])
  stream = io.StringIO()
  p = encoder.Progress(2, stream=stream, every_s=5.0)
  p.opened_record(10)  # 2 records, the unopened one assumed as long: 20
  now[0] = 110.0
  p.update(records=0, windows=5)  # 0.5 windows/s, 15 windows to go -> 30 s
  now[0] = 111.0
  p.update(records=1, windows=6)  # within every_s of the last line: not printed
  assert stream.getvalue() == "embed: 0/2 records, 5 windows, 0.5 windows/s, ETA 00:00:30\n"


def test_readme_example_runs_as_written(enc, weights, tmp_path, monkeypatch):
  """The README's five-line Python example, executed verbatim (`"W"` is a stand-in workdir)."""
  import re

  import clef_jax

  readme = (pathlib.Path(__file__).parents[1] / "README.md").read_text()
  section = readme[readme.index("## Embed your own ECGs") :]
  code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
  # Five lines of code (the formatter adds a blank line after the import).
  assert (
    len([line for line in code.splitlines() if line.strip()]) == 5
    and 'clef_jax.Encoder.load("W")' in code
  )
  load = encoder.Encoder.load.__func__
  monkeypatch.setattr(
    encoder.Encoder,
    "load",
    classmethod(
      lambda cls, source, **kw: (
        load(cls, weights, size="small", batch_size=8) if source == "W" else load(cls, source, **kw)
      )
    ),
  )
  edfio = pytest.importorskip("edfio")
  y = hostile.ecg_like(256 * 30, 256.0, 3)
  edfio.Edf(
    [
      edfio.EdfSignal(y * 1000, sampling_frequency=256, label=label, physical_dimension="uV")
      for label in ("ECG I", "ECG II")
    ]
  ).write(tmp_path / "holter.edf")
  monkeypatch.chdir(tmp_path)
  scope = {"signal": 1000 * hostile.ecg_like(512 * 30, 512.0)}
  exec(code, scope)  # noqa: S102
  assert scope["z"].shape == (3, 256)
  res = scope["res"]
  assert res.vectors.shape == (1, 256) and res.windows == [6]  # 0, 5, ..., 25 s (5 s = min_s)
  assert (res.index[0].channel, res.index[0].end_s) == ("ECG II", 30.0)
  np.testing.assert_allclose(
    scope["z"], enc.embed(scope["signal"] / 1000, fs=512), rtol=1e-4, atol=1e-4
  )
  assert clef_jax.Encoder is encoder.Encoder


def test_cli_ctrl_c_while_loading_is_one_line(tmp_path, capsys, monkeypatch):
  def interrupted(*args, **kwargs):
    raise KeyboardInterrupt

  monkeypatch.setattr(encoder.Encoder, "load", interrupted)
  np.save(tmp_path / "x.npy", hostile.ecg_like(5000, 500.0))
  rc, _, err = _run(
    [
      "--torch_weights",
      "w.ckpt",
      "--size",
      "small",
      "--input",
      tmp_path / "x.npy",
      "--fs",
      500,
      "--unit",
      "mV",
      "--output",
      tmp_path / "o" / "e.npy",
    ],
    capsys,
  )
  assert (rc, err) == (130, "error: interrupted; nothing written.\n")
  assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_encoder_load_from_a_training_workdir(tmp_path, fast_compiles):
  """`Encoder.load(workdir)` as the README says: the run's backbone and size, its latest step."""
  from clef_jax import train_loop
  from clef_jax import weights as weights_lib
  from clef_jax.configs import small

  config = small.get_config("tiny,steps=2")
  config.input.data_dir = os.fspath(tmp_path / "data")
  config.mesh.num_devices = 1
  config.evals.probe.enabled = False
  config.ckpt.export_format = ""
  config.log.plots = False
  train_loop.train_and_evaluate(config, tmp_path / "w")
  enc = encoder.Encoder.load(tmp_path / "w", batch_size=4)
  assert (enc.backbone, enc.size) == (config.model.name, config.model.size)
  params = weights_lib.load_backbone(os.fspath(tmp_path / "w")).params
  import jax

  for a, b in zip(jax.tree.leaves(enc.params), jax.tree.leaves(params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  z = enc.embed(hostile.ecg_like(2500, 250.0), fs=250, window_s=W)
  assert z.shape == (5, 256) and np.isfinite(z).all()


def test_cli_out_of_memory_is_one_line(weights, tmp_path, capsys, monkeypatch):
  def exhausted(self, x):
    raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 9.1GiB.")

  monkeypatch.setattr(encoder.Encoder, "embed_windows", exhausted)
  np.save(tmp_path / "x.npy", hostile.ecg_like(5000, 500.0))
  rc, _, err = _run(
    [
      "--torch_weights",
      weights,
      "--size",
      "small",
      "--input",
      tmp_path / "x.npy",
      "--fs",
      500,
      "--unit",
      "mV",
      "--quiet",
      "--output",
      tmp_path / "o" / "e.npy",
    ],
    capsys,
  )
  assert rc == 1 and err.count("\n") == 1 and "pass a smaller --batch_size" in err
  assert not (tmp_path / "o").exists()
