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
  args: tuple[str, ...]  # --input and friends (weights and --output are the test's).
  code: int  # Expected exit status.
  says: str  # A phrase of the error line (case-insensitive).


def _wfdb(
  root: pathlib.Path,
  name: str,
  digital: np.ndarray,
  *,
  fs: str = "250",
  gain: str = "200",
  units: str = "mV",
  sig_len: int | None = None,
  sig_name: str = "I",
  comments: bytes = b"",
  data_bytes: int | None = None,
) -> pathlib.Path:
  """A one-channel format-16 WFDB record written by hand; returns the `.hea` path."""
  digital = np.asarray(digital, "<i2")
  n = digital.shape[0] if sig_len is None else sig_len
  header = (
    f"{name} 1 {fs} {n}\n{name}.dat 16 {gain}/{units} 16 0 0 0 0 {sig_name}\n"
  ).encode() + comments
  (root / f"{name}.hea").write_bytes(header)
  data = digital.tobytes()
  (root / f"{name}.dat").write_bytes(data if data_bytes is None else data[:data_bytes])
  return root / f"{name}.hea"


def ecg_like(n: int, fs: float, seed: int = 0) -> np.ndarray:
  """A spiky 72-bpm signal plus noise, in mV."""
  t = np.arange(n) / fs
  rng = np.random.default_rng(seed)
  beats = np.exp(-((t % (60 / 72) - 0.3) ** 2) / (2 * 0.01**2))
  return beats + 0.1 * np.sin(2 * np.pi * 0.3 * t) + 0.02 * rng.standard_normal(n)


def apple_csv(samples_uv, rate="512 hertz", unit="µV", lead="Lead I") -> str:
  """An ECG export as Apple Health writes it (electrocardiograms/ecg_<date>.csv)."""
  head = (
    'Name,Jane Appleseed\nDate of Birth,"Apr 1, 1970"\n'
    "Recorded Date,2024-05-01 08:12:40 +0200\nClassification,Sinus Rhythm\n"
    'Symptoms,\nSoftware Version,2\nDevice,"Watch6,2"\n'
    f"Sample Rate,{rate}\n\nLead,{lead}\nUnit,{unit}\n\n"
  )
  return head + "".join(f"{v:.3f}\n" for v in samples_uv)


def write_all(root: pathlib.Path) -> dict[str, Case]:
  root.mkdir(parents=True, exist_ok=True)
  good = np.round(ecg_like(250 * 12, 250.0) * 200).astype(np.int16)  # 12 s at 250 Hz, 200/mV
  cases: dict[str, Case] = {}

  def wfdb_case(name, says, code=1, **kw):
    hea = _wfdb(root, name, kw.pop("digital", good), **kw)
    cases[name] = Case(("--input", str(hea)), code, says)

  # Sampling rates in headers.
  wfdb_case("fs_zero", "sampling rate", fs="0")
  wfdb_case("fs_negative", "sampling rate", fs="-250")  # wfdb itself reads this as 250 Hz.
  wfdb_case("fs_nan", "sampling rate", fs="nan")
  wfdb_case("fs_absurd", "sampling rate", fs="50000")
  # Signals.
  wfdb_case("short_record", "no window", digital=good[:50])  # 0.2 s
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
  cases["npy_all_nan"] = Case(
    ("--input", str(root / "nan.npy"), "--fs", "500", "--unit", "mV"), 1, "missing"
  )
  np.save(root / "int16.npy", np.zeros(5000, np.int16))
  cases["npy_no_fs"] = Case(("--input", str(root / "int16.npy")), 1, "pass --fs")
  (root / "plain.csv").write_text(
    "ECG1,ECG2\n" + "".join(f"{v:.4f},0\n" for v in ecg_like(3000, 250.0))
  )
  cases["csv_no_unit"] = Case(
    ("--input", str(root / "plain.csv"), "--channel", "ECG1", "--fs", "250"), 1, "pass --unit"
  )

  # Sampling rates and units on the command line.
  np.save(root / "ok.npy", ecg_like(5000, 500.0).astype(np.float32))
  ok = ("--input", str(root / "ok.npy"), "--unit", "mV")
  for name, fs in (("zero", "0"), ("negative", "-500"), ("nan", "nan"), ("absurd", "1e6")):
    cases[f"cli_fs_{name}"] = Case(ok + ("--fs", fs), 2, "sampling rate")
  cases["cli_unit"] = Case(ok[:2] + ("--fs", "500", "--unit", "furlongs"), 2, "unknown signal unit")
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
  sig = edfio.EdfSignal(
    ecg_like(2500, 250.0) * 1000, sampling_frequency=250, label="ECG I", physical_dimension="uV"
  )
  edfio.Edf([sig]).write(root / "full.edf")
  data = (root / "full.edf").read_bytes()
  (root / "truncated.edf").write_bytes(data[: len(data) - 700])
  cases["edf_truncated"] = Case(("--input", str(root / "truncated.edf")), 1, "EDF")
  return cases


# ------------------------------------------------------------------------------------------------
# Weight files.
# ------------------------------------------------------------------------------------------------
def weight_files(
  root: pathlib.Path, state_dict: dict[str, np.ndarray]
) -> dict[str, tuple[pathlib.Path, str]]:
  """Damaged or wrong copies of a good Net1D-small `state_dict` (numpy arrays, bare keys).

  Returns:
    `{name: (path, phrase the one-line error must contain)}`. safetensors files are written by
    `safetensors.numpy` or by hand (a header length and JSON), `.ckpt` files by `torch.save`.
  """
  import struct

  from safetensors.numpy import save_file

  root.mkdir(parents=True, exist_ok=True)
  floats = {k: v for k, v in state_dict.items() if v.dtype.kind == "f"}
  out: dict[str, tuple[pathlib.Path, str]] = {}

  def st(name, tensors, says):
    save_file({**state_dict, **tensors}, root / f"{name}.safetensors")
    out[name] = (root / f"{name}.safetensors", says)

  st("nan", {k: np.full_like(v, np.nan) for k, v in floats.items()}, "NaN or inf")
  st(
    "one_inf", {next(iter(floats)): np.full_like(next(iter(floats.values())), np.inf)}, "NaN or inf"
  )
  st("int64", {k: np.round(v).astype(np.int64) for k, v in floats.items()}, "not floating point")
  st("bool", {k: v > 0 for k, v in floats.items()}, "not floating point")
  first = sorted(floats)[0]
  st(
    "wrong_shape",
    {first: np.zeros(tuple(s + 1 for s in floats[first].shape), np.float32)},
    "wrong shape",
  )
  save_file(state_dict, root / "good.safetensors")
  data = (root / "good.safetensors").read_bytes()
  cases = {
    "truncated": data[: len(data) // 2],
    "header_too_large": struct.pack("<Q", 10**12) + b"{}",
    "header_not_json": struct.pack("<Q", 9) + b"{not json" + data[8:],
    "empty": b"",
  }
  for name, raw in cases.items():
    (root / f"{name}.safetensors").write_bytes(raw)
    out[f"{name}_safetensors"] = (root / f"{name}.safetensors", "not a readable safetensors")
  try:
    import torch
  except ImportError:
    return out
  torch.save(
    {"state_dict": {f"backbone.{k}": torch.from_numpy(v) for k, v in state_dict.items()}},
    root / "good.ckpt",
  )
  data = (root / "good.ckpt").read_bytes()
  for name, raw in {
    "truncated": data[: len(data) // 3],
    "empty": b"",
    "text": b"not a checkpoint\n",
  }.items():
    (root / f"{name}.ckpt").write_bytes(raw)
    out[f"{name}_ckpt"] = (root / f"{name}.ckpt", "not a readable PyTorch")
  # Loading this with weights_only=False would create `PICKLE_RAN` beside it.
  torch.save({"state_dict": _Marker(root / "PICKLE_RAN")}, root / "code.ckpt")
  out["code_ckpt"] = (root / "code.ckpt", "refuses to unpickle")
  return out


class _Marker:
  """Unpickling this creates a file: proof that a reader ran pickled code."""

  def __init__(self, path: pathlib.Path):
    self.path = str(path)

  def __reduce__(self):
    return (open, (self.path, "w"))


def pickle_bomb_npy(path: pathlib.Path, marker: pathlib.Path) -> pathlib.Path:
  """An object-dtype `.npy` whose loading with `allow_pickle=True` creates `marker`."""
  np.save(path, np.array([_Marker(marker), 1.0], dtype=object), allow_pickle=True)
  return path


# ------------------------------------------------------------------------------------------------
# What a killed dataset build leaves.
# ------------------------------------------------------------------------------------------------
def killed_build_leftovers(
  version_dir: pathlib.Path, *, replaced: bool = False
) -> list[pathlib.Path]:
  """Writes, beside `version_dir` (`.../<config>/<version>`), what TFDS and the `--overwrite`
  rename leave when a build is killed: `incomplete.<6 chars>_<version>/` holding a partial
  shard, and with `replaced` a moved-aside copy `<version>.replaced-<pid>` of the version."""
  import shutil

  parent, version = version_dir.parent, version_dir.name
  incomplete = parent / f"incomplete.K1LL3D_{version}"
  (incomplete / "split").mkdir(parents=True)
  (incomplete / "split" / "data.array_record-00000-of-00001").write_bytes(b"\0" * 100)
  made = [incomplete]
  if replaced:
    moved = parent / f"{version}.replaced-99999"
    shutil.copytree(version_dir, moved)
    made.append(moved)
  return made
