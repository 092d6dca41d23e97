"""Tests for `python -m clef_jax.bench device` (tiny sizes on CPU) and the benchmarks' load label."""

import json
import os

import numpy as np
import pytest

from clef_jax.bench import device, device_report, quiet


def _loads(monkeypatch, *values):
  """Makes `os.getloadavg` return `values[0]`, then `values[1]`, ... (the last one repeats)."""
  it = iter(values)
  last = [values[-1]]

  def fake():
    last[0] = next(it, last[0])
    return last[0]

  monkeypatch.setattr(os, "getloadavg", fake)


def test_device_check_runs_the_trainer_step_on_cpu(tmp_path, monkeypatch, capsys, fast_compiles):
  _loads(monkeypatch, (0.2, 0.3, 0.4), (1.5, 0.9, 0.5))
  out = tmp_path / "device.json"
  results = device.run(
    [
      "--sizes",
      "tiny",
      "--batches",
      "8",
      "--length",
      "256",
      "--steps",
      "3",
      "--warmup",
      "1",
      "--num_records",
      "40",
      "--workers",
      "0",
      "--peak_tflops",
      "0.5",
      "--data_dir",
      str(tmp_path / "data"),
      "--json",
      str(out),
    ]
  )
  printed = capsys.readouterr().out
  assert json.loads(out.read_text()) == json.loads(json.dumps(results, default=str))
  assert not list(tmp_path.glob(".*tmp*"))  # Written atomically.
  (row,) = results["rows"]
  assert row["size"] == "tiny" and row["batch_pairs"] == 8 and row["devices"] == 8
  assert row["compile_s"] > 0 and row["loss_finite"]
  for mode in ("resident", "fed", "pipeline_alone"):
    r = row[mode]
    assert r["steps"] == 3 and r["seconds"] > 0
    np.testing.assert_allclose(r["signals_per_s"], 16 * 3 / r["seconds"])
  for mode in ("resident", "fed"):  # The host's time per step, split three ways.
    ms = row[mode]["ms_per_step"]
    assert set(ms) == {"wait", "dispatch", "sync"} and min(ms.values()) >= 0
    total = 1e3 * row[mode]["seconds"] / row[mode]["steps"]
    assert 0.5 * total <= sum(ms.values()) <= total * (1 + 1e-6)
  # A device-resident batch is an itertools.repeat: no time waiting for it.
  assert row["resident"]["ms_per_step"]["wait"] < row["fed"]["ms_per_step"]["wait"]
  assert 0.0 <= row["input_share"] < 1.0
  np.testing.assert_allclose(
    row["input_share"], max(0.0, 1 - row["fed"]["steps_per_s"] / row["resident"]["steps_per_s"])
  )
  # MFU = XLA's flops per step x steps/s / peak.
  assert row["flops_per_step_per_device"] > 0
  np.testing.assert_allclose(
    row["mfu"]["resident"],
    row["flops_per_step_per_device"] * row["resident"]["steps_per_s"] / 0.5e12,
  )
  assert "| tiny " in printed and "MFU fed" in printed and "wait for batch ms" in printed
  # Quiet at the start (0.2 <= 0.5), whatever the load at the end.
  assert results["load"]["quiet"] and results["load"]["load_start"] == [0.2, 0.3, 0.4]
  assert results["load"]["load_end"] == [1.5, 0.9, 0.5]
  assert "load average at start: 0.20" in printed and "load average at end: 1.50" in printed
  assert "NOT QUIET" not in printed


def test_device_check_refuses_bad_arguments(capsys):
  for argv, message in (
    (["--sizes", "huge"], "unknown size"),
    (["--sizes", "small,medium", "--batches", "8"], "2 sizes"),
    (["--steps", "0"], "--steps must be >= 1"),
  ):
    with pytest.raises(SystemExit) as e:
      device.parse_args(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize(
  "kind, peak",
  [
    ("NVIDIA H100 80GB HBM3", 989.5),
    ("NVIDIA H100 PCIe", 756.0),
    ("NVIDIA H100 NVL", 835.5),
    ("NVIDIA H200", 989.5),
    ("NVIDIA A100-SXM4-80GB", 312.0),
    ("NVIDIA L4", 121.0),
    ("NVIDIA L40S", 362.05),
    ("NVIDIA L40", 181.05),
    ("cpu", None),
  ],
)
def test_gpu_peak_table(kind, peak):
  found = device_report.gpu_peak(kind)
  assert (found and found[0]) == peak


def test_busy_machine_is_labelled_not_quiet(tmp_path, monkeypatch, capsys):
  _loads(monkeypatch, (0.51, 0.2, 0.1), (0.1, 0.1, 0.1))
  load = quiet.MachineLoad()
  record = load.finish()
  printed = capsys.readouterr().out
  assert not record["quiet"] and record["label"] == "NOT QUIET (load 0.51)"
  assert "NOT QUIET (load 0.51)" in printed
  _loads(monkeypatch, (0.5, 2.0, 2.0))
  assert quiet.MachineLoad(verbose=False).quiet  # The threshold itself is quiet.


def test_loss_and_model_benchmarks_report_the_load(tmp_path, monkeypatch, capsys, fast_compiles):
  from clef_jax.bench import loss, model

  _loads(monkeypatch, (3.25, 1.0, 1.0), (2.0, 1.0, 1.0))
  loss.run(
    [
      "--max-batch",
      "64",
      "--repeats",
      "1",
      "--losses",
      "info_nce",
      "--json",
      str(tmp_path / "loss.json"),
    ]
  )
  saved = json.loads((tmp_path / "loss.json").read_text())
  assert saved["load"]["label"] == "NOT QUIET (load 3.25)" and saved["rows"][0]["batch"] == 64
  assert "NOT QUIET (load 3.25)" in capsys.readouterr().out

  _loads(monkeypatch, (0.0, 0.0, 0.0), (0.7, 0.0, 0.0))
  results = model.run(
    [
      "--size",
      "small",
      "--batch",
      "2",
      "--length",
      "64",
      "--steps",
      "1",
      "--warmup",
      "0",
      "--modes",
      "infer",
      "--frameworks",
      "jax",
      "--threads",
      "4096",
      "--json",
      str(tmp_path / "model.json"),
    ]
  )
  printed = capsys.readouterr().out
  assert results["load"]["quiet"] and results["load"]["load_end"][0] == 0.7
  assert json.loads((tmp_path / "model.json").read_text())["load"]["label"] == "quiet"
  assert "load average at start: 0.00" in printed and "load average at end: 0.70" in printed


@pytest.mark.slow
def test_device_check_script_runs_end_to_end_on_cpu(tmp_path):
  """`scripts/device_check.sh` itself, allowed onto a CPU: no install (the imports work here)."""
  import pathlib
  import subprocess
  import sys

  repo = pathlib.Path(__file__).resolve().parents[1]
  env = dict(
    os.environ,
    CLEF_DEVICE_CHECK_CPU="1",
    JAX_PLATFORMS="cpu",
    JAX_DISABLE_MOST_OPTIMIZATIONS="1",
    PYTHON=sys.executable,
    XLA_FLAGS="",
  )
  out = tmp_path / "out"
  proc = subprocess.run(
    [
      "bash",
      "scripts/device_check.sh",
      str(out),
      "--sizes",
      "tiny",
      "--length",
      "256",
      "--steps",
      "2",
      "--warmup",
      "1",
      "--num_records",
      "40",
      "--workers",
      "0",
      "--data_dir",
      str(tmp_path / "data"),
    ],
    cwd=repo,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
  assert "installing" not in proc.stdout  # Nothing installed.
  results = json.loads((out / "device_check.json").read_text())
  assert [r["size"] for r in results["rows"]] == ["tiny"] and results["rows"][0]["loss_finite"]
  assert "| tiny " in (out / "device_check.log").read_text()
  assert (out / "nvidia-smi.txt").is_file() and "device check done" in proc.stdout
