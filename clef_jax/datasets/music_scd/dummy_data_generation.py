r"""Writes a miniature MUSIC 1.0.1 tree for tests.

    python -m clef_jax.datasets.music_scd.dummy_data_generation --out_dir /tmp/music

`subject-info.csv` (`;`-separated, decimal commas, the official column names used by the builder)
for 12 patients `P0001`-`P0012` and `Holter_ECG/<id>.{hea,dat}` (200 Hz, 3 channels `X`, `Y`,
`Z`, 11,000 samples, format 16, gain 200/mV). Planted: `P0003` has no Holter, `P0006` an
unknown `Cause of death` (2), `P0007` a flat (all-zero) first window so its second window (start
5000) is stored, `P0009` channel 0 all zero (no valid window), `P0010` 5 % NaN in its first
window (still valid).

`extra=N` appends N more patients `P0013`... (for running the evaluation on the tree) with
`Cause of death` cycling 0, 1, 3, 6, 0, 1, 3, 7 (every class in any four consecutive rows) and
valid 12-s Holters whose beat rate follows the class, so the labels are learnable.
"""

from __future__ import annotations

import pathlib

import numpy as np

PATIENTS = tuple(f"P{k:04d}" for k in range(1, 13))
CAUSES = (0, 1, 3, 6, 7, 2, 0, 3, 1, 0, 6, 3)  # P0006 is the unknown code 2.
NO_HOLTER = "P0003"
SAMPLES = 11000
FS = 200
EXTRA_CAUSES = (0, 1, 3, 6, 0, 1, 3, 7)
EXTRA_SAMPLES = 2400
EXTRA_RATE = {0: 1.0, 1: 1.3, 3: 1.6, 6: 1.9, 7: 1.9}
COLUMNS = (
  "Patient ID",
  "Age",
  "Gender (male=1)",
  "LVEF (%)",
  "Holter available",
  "Exit of the study",
  "Cause of death",
  "Follow-up period from enrollment (days)",
)


def extra_patients(extra: int) -> tuple[tuple[str, int], ...]:
  """(Patient ID, cause of death) of the `extra` patients (module docstring)."""
  return tuple(
    (f"P{len(PATIENTS) + 1 + k:04d}", EXTRA_CAUSES[k % len(EXTRA_CAUSES)]) for k in range(extra)
  )


def extra_holter_mv(k: int, cause: int) -> np.ndarray:
  """`(EXTRA_SAMPLES, 3)` mV of extra patient k: beats at the class's rate, noise."""
  rng = np.random.default_rng(k)
  t = np.arange(EXTRA_SAMPLES) / FS
  beat = np.exp(-(((t * EXTRA_RATE[cause]) % 1.0 - 0.4) ** 2) / 0.002)
  x = np.stack([beat * 0.9, 0.5 * beat + 0.1, -0.3 * beat], axis=1)
  return x + rng.normal(0, 0.02, x.shape)


def holter_mv(pid: str) -> np.ndarray:
  """`(SAMPLES, 3)` mV; channel 0 carries the planted problems."""
  k = PATIENTS.index(pid)
  t = np.arange(SAMPLES) / FS
  beat = np.exp(-(((t * 1.15) % 1.0 - 0.4) ** 2) / 0.002)
  x = np.stack([beat * (0.8 + 0.05 * k), 0.5 * beat + 0.1, -0.3 * beat], axis=1)
  x[:, 0] += 0.02 * np.sin(2 * np.pi * 0.3 * t) + 0.01 * k
  if pid == "P0007":
    x[:2000, 0] = 0.0
  if pid == "P0009":
    x[:, 0] = 0.0
  if pid == "P0010":
    x[100:200, 0] = np.nan
  return x


def write_dummy_data(out_dir: str | pathlib.Path, extra: int = 0) -> pathlib.Path:
  """Writes the tree (plus `extra` patients, module docstring) under `out_dir` and returns it."""
  import wfdb  # Lazy.

  out_dir = pathlib.Path(out_dir)
  holter = out_dir / "Holter_ECG"
  holter.mkdir(parents=True, exist_ok=True)
  lines = [";".join(COLUMNS)]
  for k, (pid, cause) in enumerate(tuple(zip(PATIENTS, CAUSES)) + extra_patients(extra)):
    has = pid != NO_HOLTER
    exit_code = "" if cause == 0 else "3"
    lines.append(
      ";".join(
        (
          pid,
          str(50 + k),
          str(k % 2),
          f"{30 + k},5",
          str(int(has)),
          exit_code,
          str(cause),
          str(1000 + 10 * k),
        )
      )
    )
    if has:
      wfdb.wrsamp(
        pid,
        fs=FS,
        units=["mV"] * 3,
        sig_name=["X", "Y", "Z"],
        p_signal=holter_mv(pid) if k < len(PATIENTS) else extra_holter_mv(k, cause),
        fmt=["16"] * 3,
        adc_gain=[200.0] * 3,
        baseline=[0] * 3,
        write_dir=str(holter),
      )
  (out_dir / "subject-info.csv").write_text("\n".join(lines) + "\n")
  return out_dir


if __name__ == "__main__":
  import sys  # pylint: disable=g-import-not-at-top

  from clef_jax import build  # pylint: disable=g-import-not-at-top

  sys.exit(build.dummy_data_main(write_dummy_data))
