"""A generator of hostile ECG input files, written independently of `clef_jax.readers`.

`write_all(root)` writes every case under `root` and returns `{name: Case}`; each case names the
CLI arguments that feed it to `python -m clef_jax.embed`, the exit status expected and a phrase
the one-line error must contain. WFDB headers and `.npy` files are written by hand (bytes or
`numpy.save`), EDF files by edfio, so a reader bug cannot hide behind a shared writer.
"""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np


@dataclasses.dataclass(frozen=True)
class Case:
  args: tuple[str, ...]   # --input and friends (weights and --output are the test's).
  code: int               # Expected exit status.
  says: str               # A phrase of the error line (case-insensitive).


def _wfdb(root: pathlib.Path, name: str, digital: np.ndarray, *, fs: str = "250",
          gain: str = "200", units: str = "mV", sig_len: int | None = None,
          sig_name: str = "I", comments: bytes = b"", data_bytes: int | None = None
          ) -> pathlib.Path:
  """A one-channel format-16 WFDB record written by hand; returns the `.hea` path."""
  digital = np.asarray(digital, "<i2")
  n = digital.shape[0] if sig_len is None else sig_len
  header = (f"{name} 1 {fs} {n}\n{name}.dat 16 {gain}/{units} 16 0 0 0 0 {sig_name}\n"
            ).encode() + comments
  (root / f"{name}.hea").write_bytes(header)
  data = digital.tobytes()
  (root / f"{name}.dat").write_bytes(data if data_bytes is None else data[:data_bytes])
  return root / f"{name}.hea"


def ecg_like(n: int, fs: float, seed: int = 0) -> np.ndarray:
  """A spiky 72-bpm signal plus noise, in mV."""
  t = np.arange(n) / fs
  rng = np.random.default_rng(seed)
  beats = np.exp(-((t % (60 / 72) - 0.3) ** 2) / (2 * 0.01 ** 2))
  return beats + 0.1 * np.sin(2 * np.pi * 0.3 * t) + 0.02 * rng.standard_normal(n)


def apple_csv(samples_uv, rate="512 hertz", unit="µV", lead="Lead I") -> str:
  """An ECG export as Apple Health writes it (electrocardiograms/ecg_<date>.csv)."""
  head = ("Name,Jane Appleseed\nDate of Birth,\"Apr 1, 1970\"\n"
          "Recorded Date,2024-05-01 08:12:40 +0200\nClassification,Sinus Rhythm\n"
          "Symptoms,\nSoftware Version,2\nDevice,\"Watch6,2\"\n"
          f"Sample Rate,{rate}\n\nLead,{lead}\nUnit,{unit}\n\n")
  return head + "".join(f"{v:.3f}\n" for v in samples_uv)


def write_all(root: pathlib.Path) -> dict[str, Case]:
  root.mkdir(parents=True, exist_ok=True)
  good = np.round(ecg_like(250 * 12, 250.0) * 200).astype(np.int16)   # 12 s at 250 Hz, 200/mV
  cases: dict[str, Case] = {}

  def wfdb_case(name, says, code=1, **kw):
    hea = _wfdb(root, name, kw.pop("digital", good), **kw)
    cases[name] = Case(("--input", str(hea)), code, says)

  # Sampling rates in headers.
  wfdb_case("fs_zero", "sampling rate", fs="0")
  wfdb_case("fs_negative", "sampling rate", fs="-250")   # wfdb itself reads this as 250 Hz.
  wfdb_case("fs_nan", "sampling rate", fs="nan")
  wfdb_case("fs_absurd", "sampling rate", fs="50000")
  # Signals.
  wfdb_case("short_record", "no window", digital=good[:50])                      # 0.2 s
  wfdb_case("all_zero", "flat", digital=np.zeros(3000, np.int16))
  wfdb_case("constant", "flat", digital=np.full(3000, 417, np.int16))
  wfdb_case("nan_only", "missing", digital=np.full(3000, -32768, np.int16))
  wfdb_case("header_longer_than_file", "shorter than the header", sig_len=30000)
  wfdb_case("truncated_dat", "shorter than the header", data_bytes=1001)
  wfdb_case("unknown_unit", "unknown signal unit", units="mmHg")
  # Not hostile: odd header comments must still embed.
  wfdb_case("latin1_comments", "", code=0, comments=b"# Age: 63 caf\xe9 \xff\xfe\n")

  # .npy arrays.
  np.save(root / "object.npy", np.array([np.zeros(3), "x"], dtype=object), allow_pickle=True)
  cases["npy_object"] = Case(("--input", str(root / "object.npy")), 1, "not a plain numeric")
  np.save(root / "strings.npy", np.array(["1.0", "2.0"]))
  cases["npy_strings"] = Case(("--input", str(root / "strings.npy")), 1, "dtype")
  np.save(root / "complex.npy", np.ones(5000, np.complex64))
  cases["npy_complex"] = Case(("--input", str(root / "complex.npy")), 1, "dtype")
  np.save(root / "four_d.npy", np.zeros((2, 3, 4, 5), np.float32))
  cases["npy_4d"] = Case(("--input", str(root / "four_d.npy")), 1, "expected (T,)")
  np.save(root / "eleven_leads.npy", np.zeros((2, 5000, 11), np.float32))
  cases["npy_11_leads"] = Case(("--input", str(root / "eleven_leads.npy")), 1, "(N, T, 12)")
  (root / "garbage.npy").write_bytes(b"\x93NUMPY\x01\x00garbage")
  cases["npy_garbage"] = Case(("--input", str(root / "garbage.npy")), 1, "npy")
  np.save(root / "nan.npy", np.full(5000, np.nan, np.float32))
  cases["npy_all_nan"] = Case(("--input", str(root / "nan.npy"), "--fs", "500", "--unit", "mV"),
                              1, "missing")
  np.save(root / "int16.npy", np.zeros(5000, np.int16))
  cases["npy_no_fs"] = Case(("--input", str(root / "int16.npy")), 1, "pass --fs")
  (root / "plain.csv").write_text("ECG1,ECG2\n" + "".join(f"{v:.4f},0\n" for v in
                                                          ecg_like(3000, 250.0)))
  cases["csv_no_unit"] = Case(("--input", str(root / "plain.csv"), "--channel", "ECG1", "--fs",
                               "250"), 1, "pass --unit")

  # Sampling rates and units on the command line.
  np.save(root / "ok.npy", ecg_like(5000, 500.0).astype(np.float32))
  ok = ("--input", str(root / "ok.npy"), "--unit", "mV")
  for name, fs in (("zero", "0"), ("negative", "-500"), ("nan", "nan"), ("absurd", "1e6")):
    cases[f"cli_fs_{name}"] = Case(ok + ("--fs", fs), 2, "sampling rate")
  cases["cli_unit"] = Case(ok[:2] + ("--fs", "500", "--unit", "furlongs"), 2,
                           "unknown signal unit")
  cases["cli_window"] = Case(ok + ("--window_s", "0"), 2, "--window_s")
  cases["cli_hop"] = Case(ok + ("--hop_s", "-1"), 2, "--hop_s")
  cases["cli_lead"] = Case(ok + ("--lead", "XYZ"), 2, "not a standard lead")
  cases["missing_input"] = Case(("--input", str(root / "nope")), 1, "no such file")

  # EDF: a truncated file and a non-EDF file with the suffix.
  (root / "not.edf").write_bytes(b"0       hello" + b" " * 300)
  cases["edf_garbage"] = Case(("--input", str(root / "not.edf")), 1, "EDF")
  try:
    import edfio
  except ImportError:
    return cases
  sig = edfio.EdfSignal(ecg_like(2500, 250.0) * 1000, sampling_frequency=250, label="ECG I",
                        physical_dimension="uV")
  edfio.Edf([sig]).write(root / "full.edf")
  data = (root / "full.edf").read_bytes()
  (root / "truncated.edf").write_bytes(data[:len(data) - 700])
  cases["edf_truncated"] = Case(("--input", str(root / "truncated.edf")), 1, "EDF")
  return cases
