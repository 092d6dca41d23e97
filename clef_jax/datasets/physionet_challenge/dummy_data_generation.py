r"""Writes a tiny PhysioNet/CinC Challenge tree for tests and smoke builds.

    python -m clef_jax.datasets.physionet_challenge.dummy_data_generation --out_dir /tmp/challenge

Records (all valid, written like the Challenge's own files):

- `georgia/E00001` 500 Hz, 10 s, `.mat` (MATLAB v4, WFDB format `16x1+24`), SNOMED `# Dx:`;
- `cpsc_2018/A0001` 500 Hz, 25 s, `.mat`, CPSC abbreviations `# Dx: AF,I-AVB`, age `NaN`;
- `incart/I0001` 257 Hz, 12 s, `.dat`, leads named in upper case (`AVR`, ...);
- `ptb/S0001` 1000 Hz, 11 s, `.dat`, lower-case names plus Frank leads `vx, vy, vz`.
"""

from __future__ import annotations

import pathlib

import numpy as np

from clef_jax.data import schema

# (subdir, record, fs, seconds, lead names, dx, age, sex, use_mat)
RECORDS = (
  (
    "georgia",
    "E00001",
    500,
    10.0,
    list(schema.LEAD_ORDER),
    "164889003,59118001",
    "63",
    "Male",
    True,
  ),
  ("cpsc_2018", "A0001", 500, 25.0, list(schema.LEAD_ORDER), "AF,I-AVB", "NaN", "Female", True),
  (
    "incart",
    "I0001",
    257,
    12.0,
    [n.upper() for n in schema.LEAD_ORDER],
    "426783006",
    "65",
    "M",
    False,
  ),
  (
    "ptb",
    "S0001",
    1000,
    11.0,
    [n.lower() for n in schema.LEAD_ORDER] + ["vx", "vy", "vz"],
    "164865005",
    "81",
    "female",
    False,
  ),
)


def fake_ecg_mv(n: int, fs: float, n_leads: int, seed: int) -> np.ndarray:
  """`(n, n_leads)` float mV: a 1.2 Hz beat-like waveform plus lead-specific offsets and noise."""
  rng = np.random.default_rng(seed)
  t = np.arange(n) / fs
  beat = np.exp(-(((t * 1.2) % 1.0 - 0.3) ** 2) / 0.001)  # Narrow "R waves" at 72 bpm.
  amp = rng.uniform(-1.5, 1.5, n_leads)
  x = beat[:, None] * amp + 0.05 * np.sin(2 * np.pi * 0.3 * t)[:, None]
  return x + rng.normal(0, 0.01, (n, n_leads)) + rng.uniform(-0.2, 0.2, n_leads)


def write_challenge_record(
  directory: pathlib.Path,
  name: str,
  digital: np.ndarray,
  fs: float,
  lead_names: list[str],
  comments: list[str],
  *,
  use_mat: bool,
  gain: float = 1000.0,
  mat_format: str = "16x1+24",
  gain_baseline: bool = True,
  comment_prefix: str = "# ",
):
  """Writes `name.hea` + `name.mat` (MATLAB v4, `16x1+24`) or `name.dat` (format 16).

  Args:
    directory: output folder (created).
    name: record name.
    digital: `(T, C)` int16 samples.
    fs: sampling rate.
    lead_names: `C` channel names.
    comments: header comment lines without `#`.
    use_mat: write the Challenge's `.mat` container instead of a plain `.dat`.
    gain: ADC gain per mV.
    mat_format: the `.mat` signals' format field (`16x1+24` Challenge, `16+24` Chapman/Ningbo).
    gain_baseline: write the gain as `1000(0)/mV` (Challenge) rather than `1000/mV` (Chapman).
    comment_prefix: `"# "` (Challenge) or `"#"` (Chapman/Ningbo: `#Dx: ...`).
  """
  directory.mkdir(parents=True, exist_ok=True)
  digital = np.asarray(digital, "<i2")
  n, c = digital.shape
  if use_mat:
    # MATLAB v4 header: type 30 (little-endian int16 matrix), rows, cols, imag, name length; then
    # the name "val\0": 24 bytes, after which the column-major (C, T) matrix is WFDB format 16.
    head = np.array([30, c, n, 0, 4], "<i4").tobytes() + b"val\0"
    file_name, fmt = f"{name}.mat", mat_format
    (directory / file_name).write_bytes(head + digital.tobytes())
  else:
    file_name, fmt = f"{name}.dat", "16"
    (directory / file_name).write_bytes(digital.tobytes())
  lines = [f"{name} {c} {fs:g} {n}"]
  for j, lead in enumerate(lead_names):
    checksum = int(digital[:, j].astype(np.int64).sum()) % 65536
    checksum = checksum - 65536 if checksum >= 32768 else checksum
    gain_field = f"{gain:g}(0)/mV" if gain_baseline else f"{gain:g}/mV"
    lines.append(f"{file_name} {fmt} {gain_field} 16 0 {int(digital[0, j])} {checksum} 0 {lead}")
  lines += [f"{comment_prefix}{line}" for line in comments]
  (directory / f"{name}.hea").write_text("\n".join(lines) + "\n")


def write_dummy_data(out_dir: str | pathlib.Path) -> pathlib.Path:
  """Writes the `RECORDS` tree under `out_dir` and returns it."""
  out_dir = pathlib.Path(out_dir)
  for seed, (sub, name, fs, seconds, leads, dx, age, sex, use_mat) in enumerate(RECORDS):
    x = fake_ecg_mv(int(seconds * fs), fs, len(leads), seed)
    digital = np.round(x * 1000).astype(np.int16)
    write_challenge_record(
      out_dir / sub,
      name,
      digital,
      fs,
      leads,
      [f"Age: {age}", f"Sex: {sex}", f"Dx: {dx}", "Rx: Unknown"],
      use_mat=use_mat,
    )
  return out_dir


if __name__ == "__main__":
  import sys  # pylint: disable=g-import-not-at-top

  from clef_jax import build  # pylint: disable=g-import-not-at-top

  sys.exit(build.dummy_data_main(write_dummy_data))
