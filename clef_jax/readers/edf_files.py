"""EDF, EDF+ and BDF(+) files as `Recording`s, through pyEDFlib.

pyEDFlib wraps EDFlib, the C reference implementation of the EDF/EDF+/BDF/BDF+ formats (it
validates the header against the file size, so a truncated file is refused on open), and reads
any sample range of one signal (`readSignal(ch, start, n)`) without loading the file: a 24-hour
Holter is read one window block at a time. (edfio, the other maintained reader, is a pure-numpy
implementation; the tests use it as the independent writer of their EDF/BDF files.)

Channels are chosen by label (`Lead I`, `ECG II`, `MLII`, ... through the alias table); each
signal has its own sampling rate and physical dimension (`uV`, `mV`, `V`). EDF+ annotation
signals are never offered as channels.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import sys

import numpy as np

from clef_jax.readers import core

SUFFIXES = (".edf", ".bdf", ".rec")
_ANNOTATIONS = ("EDF Annotations", "BDF Annotations")


@contextlib.contextmanager
def _quiet_stdout():
  """EDFlib's C code prints header diagnostics to stdout; the error it raises says the same."""
  sys.stdout.flush()
  saved = os.dup(1)
  try:
    with open(os.devnull, "w") as null:
      os.dup2(null.fileno(), 1)
      yield
  finally:
    os.dup2(saved, 1)
    os.close(saved)


def open_file(
  path: pathlib.Path,
  *,
  rid: str,
  lead: str | None = None,
  channel: str | int | None = None,
  unit: str | None = None,
) -> core.Recording:
  """Opens one EDF/BDF file on one channel; InputError when it cannot be used."""
  import pyedflib  # Lazy: only EDF input needs it.

  where = str(path)
  try:
    with _quiet_stdout():
      f = pyedflib.EdfReader(str(path))
  except Exception as e:  # OSError for non-compliant or truncated files; others for odd headers.
    msg = str(e).split("\n", 1)[0]
    reason = "truncated" if "filesize" in msg.lower() else "unreadable"
    raise core.InputError(f"{where}: not a readable EDF/BDF file ({msg}).", reason) from None
  try:
    labels = [lab.strip() for lab in f.getSignalLabels()]
    usable = [i for i, lab in enumerate(labels) if lab not in _ANNOTATIONS]
    choice = core.choose_channel(
      [labels[i] for i in usable], where=where, lead=lead, channel=channel
    )
    ch = usable[choice.index]
    fs = core.check_fs(f.getSampleFrequency(ch), where=f"{where} channel {labels[ch]!r}")
    dim = f.getPhysicalDimension(ch).strip()
    scale = core.unit_scale(
      unit if unit is not None else dim, where=f"{where} channel {labels[ch]!r}"
    )
    n = int(f.getNSamples()[ch])
    if n <= 0:
      raise core.InputError(f"{where}: channel {labels[ch]!r} has no samples.", "short")
  except Exception:
    f.close()
    raise

  def reader(start: int, stop: int) -> np.ndarray:
    try:
      return f.readSignal(ch, start, stop - start) * scale
    except Exception as e:  # EDFlib reports a failed read in several types.
      raise core.InputError(
        f"{where}: cannot read samples {start}-{stop} of channel "
        f"{labels[ch]!r} ({type(e).__name__}: {e}).",
        "truncated",
      ) from None

  return core.Recording(
    id=rid,
    path=path,
    channel=choice.name,
    lead=choice.lead,
    fs=fs,
    n_samples=n,
    reader=reader,
    notes=[choice.note] if choice.note else [],
    closer=f.close,
  )
