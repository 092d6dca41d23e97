r"""Writes a miniature icentia11k-continuous-ecg 1.0 tree (8 patients, 20 s segments) for tests.

    python -m clef_jax.datasets.icentia11k.dummy_data_generation --out_dir /tmp/icentia11k

Top-level `RECORDS` (`p00/p0000N/`), per patient a `RECORDS` file and segments
`p0000N_sMM.{hea,dat,atr}`: one channel, 250 Hz, format 16, with beat symbols (`N`, `S`, `V`, `Q`)
and rhythm changes (`+` with `aux_note` `(N`, `(AFIB`, `(AFL`) in the `.atr` files. Cases:

- p00000: N and S in s00, V in s01; rhythm (N in s00, (AFIB in s01 (s00's is too late for a
  window), (AFL only too close to the end;
- p00001: N beats and a Q beat, rhythm (N;
- p00002: only beats within 5 s of an edge, no rhythm notes, a listed segment s01 without files
  (skipped `no_valid_window` in both configs);
- p00003: listed, but its folder has no `RECORDS` (skipped `invalid_list_entry`);
- p00004: a flat s00 (unusable), N beat and (N in s01 (kept, flagged `segment_unreadable`);
- p00005-p00007: N beats and (N.

`extra=N` adds N more patients `p00008`... (for running the evaluation on the tree), each with one
segment holding an N, an S and a V beat and `(N`, `(AFIB` and `(AFL` onsets that all fit a
window, so every patient gives all three classes of both configs and every split holds them;
the waveform around each annotation differs by class (beat width), so the labels are learnable.
"""

from __future__ import annotations

import pathlib

import numpy as np

FS = 250
SEGMENT_SAMPLES = 20 * FS

# patient -> segment -> (beats [(sample, symbol)], rhythm onsets [(sample, note)], flat)
PATIENTS = {
  "p00000": {
    "s00": (
      [(300, "N"), (1500, "N"), (2000, "S"), (2600, "N"), (3700, "N"), (4000, "Q")],
      [(0, "(N"), (3000, "(AFIB")],
      False,
    ),
    "s01": ([(1200, "N"), (2000, "V"), (2500, "N")], [(100, "(AFIB"), (4000, "(AFL")], False),
  },
  "p00001": {"s00": ([(1300, "N"), (2000, "Q"), (2500, "N"), (3600, "N")], [(0, "(N")], False)},
  "p00002": {"s00": ([(100, "N"), (4900, "N")], [], False), "s01": None},
  "p00003": None,
  "p00004": {
    "s00": ([(2500, "N")], [(0, "(N")], True),
    "s01": ([(2500, "N")], [(1000, "(N")], False),
  },
  "p00005": {"s00": ([(1400, "N"), (2800, "N")], [(10, "(N")], False)},
  "p00006": {"s00": ([(2100, "N")], [(0, "(N")], False)},
  "p00007": {"s00": ([(1250, "N"), (3750, "N")], [(2500, "(N")], False)},
}


# Segment of each `extra` patient: beats (sample, symbol) and rhythm onsets (sample, note).
EXTRA_BEATS = ((300, "N"), (1500, "N"), (2500, "S"), (3500, "V"), (4700, "N"))
EXTRA_RHYTHM = ((0, "(N"), (1000, "(AFIB"), (2400, "(AFL"))
EXTRA_WIDTH = {"N": 0.0008, "S": 0.0003, "V": 0.004}


def extra_patients(extra: int) -> dict[str, dict]:
  """The `extra` patients, as `PATIENTS` (module docstring)."""
  return {
    f"p{8 + k:05d}": {"s00": (list(EXTRA_BEATS), list(EXTRA_RHYTHM), False)} for k in range(extra)
  }


def extra_segment_mv(n: int, seed: int) -> np.ndarray:
  """`(n, 1)` float mV for an `extra` patient: one pulse per beat, its width by beat type, and a
  slow wave whose frequency changes at each rhythm onset."""
  rng = np.random.default_rng(seed)
  t = np.arange(n)
  x = rng.normal(0, 0.02, n)
  for sample, symbol in EXTRA_BEATS:
    x += np.exp(-(((t - sample) / FS) ** 2) / EXTRA_WIDTH[symbol])
  for (start, _), (stop, _), freq in zip(
    EXTRA_RHYTHM, EXTRA_RHYTHM[1:] + ((n, ""),), (0.2, 4.0, 1.5)
  ):
    x[start:stop] += 0.1 * np.sin(2 * np.pi * freq * t[start:stop] / FS)
  return x[:, None]


def segment_mv(n: int, seed: int) -> np.ndarray:
  """`(n, 1)` float mV: narrow beat-like pulses, a slow wave and noise."""
  rng = np.random.default_rng(seed)
  t = np.arange(n) / FS
  x = np.exp(-(((t * 1.1) % 1.0 - 0.5) ** 2) / 0.0008) + 0.1 * np.sin(2 * np.pi * 0.2 * t)
  return (x + rng.normal(0, 0.02, n))[:, None]


def write_dummy_data(out_dir: str | pathlib.Path, extra: int = 0) -> pathlib.Path:
  """Writes the tree (plus `extra` patients, module docstring) under `out_dir` and returns it."""
  import wfdb  # Lazy.

  out_dir = pathlib.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  patients = {**PATIENTS, **extra_patients(extra)}
  (out_dir / "RECORDS").write_text("".join(f"p00/{p}/\n" for p in patients))
  for i, (patient, segments) in enumerate(patients.items()):
    folder = out_dir / "p00" / patient
    folder.mkdir(parents=True, exist_ok=True)
    if segments is None:
      continue
    (folder / "RECORDS").write_text("".join(f"{patient}_{s}\n" for s in segments))
    for j, (seg, content) in enumerate(segments.items()):
      if content is None:
        continue
      beats, rhythm, flat = content
      name = f"{patient}_{seg}"
      if flat:
        x = np.zeros((SEGMENT_SAMPLES, 1))
      elif patient in PATIENTS:
        x = segment_mv(SEGMENT_SAMPLES, 100 * i + j)
      else:
        x = extra_segment_mv(SEGMENT_SAMPLES, 100 * i + j)
      wfdb.wrsamp(
        name,
        fs=FS,
        units=["mV"],
        sig_name=["ECG"],
        p_signal=x,
        fmt=["16"],
        adc_gain=[1000.0],
        baseline=[0],
        write_dir=str(folder),
      )
      notes = sorted([(s, sym, "") for s, sym in beats] + [(s, "+", note) for s, note in rhythm])
      wfdb.wrann(
        name,
        "atr",
        np.array([n[0] for n in notes]),
        symbol=[n[1] for n in notes],
        aux_note=[n[2] for n in notes],
        fs=FS,
        write_dir=str(folder),
      )
  return out_dir


if __name__ == "__main__":
  import sys  # pylint: disable=g-import-not-at-top

  from clef_jax import build  # pylint: disable=g-import-not-at-top

  sys.exit(build.dummy_data_main(write_dummy_data))
