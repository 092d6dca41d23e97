r"""Writes a miniature Aurora-BP tree for tests.

    python -m clef_jax.datasets.aurora_bp.dummy_data_generation --out_dir /tmp/aurora_bp

`participants.tsv` with 12 auscultatory participants (`a000`-`a011`) and 2 oscillometric ones,
`features.tsv` with two rows per participant (`baseline_sbp`/`baseline_dbp` repeated, plus a few
other columns of the real file), and per participant
`measurements_<protocol>/<pid>/<pid>.initial.Calibration_start_1.tsv` (columns `t`, `ekg`,
`optical`, `pressure`, 500 samples/s, `ekg` in mV, a few NaN samples). Planted problems: `a005`
has no baselines, `a006` no measurement file, `a007` a file without an `ekg` column.

`extra=N` adds N more auscultatory participants `a100`... (for running the evaluation on the
tree), complete and valid, whose baselines and beat rate rise together.
"""

from __future__ import annotations

import pathlib

import numpy as np

SAMPLES = 700
PIDS = tuple(f"a{k:03d}" for k in range(12)) + ("o000", "o001")
NO_BASELINE = "a005"
NO_FILE = "a006"
NO_EKG = "a007"
MEASUREMENT = "initial.Calibration_start_1"


EXTRA_FIRST = 100


def extra_pids(extra: int) -> tuple[str, ...]:
  """The `extra` participants' ids (module docstring)."""
  return tuple(f"a{EXTRA_FIRST + k:03d}" for k in range(extra))


def _index(pid: str) -> int:
  return PIDS.index(pid) if pid in PIDS else int(pid[1:]) - EXTRA_FIRST + len(PIDS)


def baseline(pid: str) -> tuple[float, float]:
  k = _index(pid)
  if pid not in PIDS:
    k = (k - len(PIDS)) % 20
  return 110.0 + 3.5 * k, 70.0 + 1.5 * k


def ekg_mv(pid: str) -> np.ndarray:
  """`(SAMPLES,)` mV with NaN at samples 10 and 11 (for `a001`: also 300)."""
  k = _index(pid)
  t = np.arange(SAMPLES) / 500.0
  rate = 1.2 if pid in PIDS else 0.8 + 0.1 * ((k - len(PIDS)) % 20)
  x = (
    0.9 * np.exp(-(((t * rate) % 1.0 - 0.3) ** 2) / 0.001) + 0.05 * np.sin(2 * np.pi * t) + 0.1 * k
  )
  x[[10, 11]] = np.nan
  if pid == "a001":
    x[300] = np.nan
  return x


def write_dummy_data(out_dir: str | pathlib.Path, extra: int = 0) -> pathlib.Path:
  """Writes the tree (plus `extra` participants, module docstring) under `out_dir`; returns it."""
  out_dir = pathlib.Path(out_dir)
  pids = PIDS + extra_pids(extra)
  out_dir.mkdir(parents=True, exist_ok=True)
  lines = ["pid\tn_meas_inlab\tage\theight\tweight\tgender"]
  for k, pid in enumerate(pids):
    lines.append(f"{pid}\t15\t{30 + k}.0\t{64 + k}.0\t{150 + 5 * k}.0\t{'MF'[k % 2]}")
  (out_dir / "participants.tsv").write_text("\n".join(lines) + "\n")
  lines = ["pid\tphase\tmeasurement\tsbp\tdbp\tbaseline_sbp\tbaseline_dbp\thr_ekg"]
  for pid in pids:
    sbp, dbp = ("", "") if pid == NO_BASELINE else baseline(pid)
    for m in ("Calibration_start_1", "Static_challenge_start_1"):
      lines.append(f"{pid}\tinitial\t{m}\t{sbp}\t{dbp}\t{sbp}\t{dbp}\t71.5")
  (out_dir / "features.tsv").write_text("\n".join(lines) + "\n")
  for pid in pids:
    if pid == NO_FILE:
      continue
    protocol = "auscultatory" if pid.startswith("a") else "oscillometric"
    folder = out_dir / f"measurements_{protocol}" / pid
    folder.mkdir(parents=True, exist_ok=True)
    x = ekg_mv(pid)
    head = "t\tekg\toptical\tpressure" if pid != NO_EKG else "t\tecg_other\toptical\tpressure"
    rows = [head] + [
      f"{i / 500:.3f}\t{'NaN' if np.isnan(v) else f'{v:.5f}'}\t-5.8e+05\t2901.6"
      for i, v in enumerate(x)
    ]
    (folder / f"{pid}.{MEASUREMENT}.tsv").write_text("\n".join(rows) + "\n")
  return out_dir


if __name__ == "__main__":
  import sys  # pylint: disable=g-import-not-at-top

  from clef_jax import build  # pylint: disable=g-import-not-at-top

  sys.exit(build.dummy_data_main(write_dummy_data))
