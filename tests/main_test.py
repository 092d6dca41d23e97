"""End-to-end tests of `python -m clef_jax.main` on `configs/small.py:tiny` (CPU, subprocesses).

Every run shares one persistent XLA compilation cache and `jax_disable_most_optimizations`, so
only the first run of each program pays for compilation. One reference run (uninterrupted, with
export, probe and plots, 1 process x 8 devices) is what the kill/resume, SIGTERM, non-finite and
2-process runs are compared with.
"""

import fcntl
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from clef_jax import allocator, monitoring, noise

REPO = pathlib.Path(__file__).resolve().parents[1]
STEPS = 8
TINY = f"configs/small.py:tiny,steps={STEPS}"
TRAIN_ONLY = (
  "--config.evals.probe.enabled=False",
  "--config.ckpt.export_format=",
  "--config.log.plots=False",
)


def run_main(workdir, *flags, shared, config=TINY, devices=8, background=False):
  """Runs the trainer in a subprocess: 8 simulated devices, fast compiles, and a compilation
  cache and demo archive shared by every run of the session."""
  env = dict(
    os.environ,
    JAX_PLATFORMS="cpu",
    JAX_DISABLE_MOST_OPTIMIZATIONS="1",
    XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
  )
  cmd = [
    sys.executable,
    "-m",
    "clef_jax.main",
    f"--config={config}",
    f"--workdir={workdir}",
    f"--compilation_cache={shared / 'jax_cache'}",
    f"--config.input.data_dir={shared / 'data'}",
    *flags,
  ]
  if background:
    return subprocess.Popen(
      cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
  return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def losses(workdir):
  rows = monitoring.read_metrics(workdir)
  assert [r["step"] for r in rows] == list(range(len(rows))), "steps missing or repeated"
  return np.array([r["loss"] for r in rows])


def checkpoint_steps(workdir):
  return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


def wait_for_step(proc, workdir, step, timeout=300):
  """Polls metrics.jsonl until `step` is logged (the trainer then works on later steps)."""
  end = time.monotonic() + timeout
  while time.monotonic() < end:
    if proc.poll() is not None:
      raise AssertionError(f"run ended early ({proc.returncode}): {proc.stderr.read()[-2000:]}")
    if any(r["step"] >= step for r in monitoring.read_metrics(workdir)):
      return
    time.sleep(0.01)
  raise AssertionError("timed out")


@pytest.fixture(scope="session")
def shared(tmp_path_factory):
  """Compilation cache, demo archive and reference run, shared by every run of the session.

  Under pytest-xdist each worker has its own session: the directory then sits beside the
  workers' temp roots, so the workers share it (and the reference run is made once).
  """
  base = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    base = base.parent
  path = base / "main_test_shared"
  path.mkdir(exist_ok=True)
  return path


@pytest.fixture(scope="session")
def reference(shared):
  """One uninterrupted tiny run with everything on: (workdir, its stdout)."""
  workdir, done = shared / "reference", shared / "reference_stdout.txt"
  with open(shared / "reference.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # another worker may be making it
    if not done.exists():
      proc = run_main(workdir, shared=shared)
      assert proc.returncode == 0, proc.stderr[-3000:]
      done.write_text(proc.stdout)
  return workdir, done.read_text()


@pytest.mark.slow
def test_demo_run_outputs(reference):
  workdir, out = reference
  assert "eval: linear probe" in out and "| demo_sex | AUROC ↑ |" in out
  assert "Difference to random init" in out  # the evaluate CLI's table
  assert len(losses(workdir)) == STEPS
  assert checkpoint_steps(workdir) == [4, 6, 8]  # every 2 steps, 3 kept
  assert list((workdir / "tensorboard").glob("events.out.tfevents.*"))
  assert {p.name for p in (workdir / "plots").glob("*.png")} == {
    "loss.png",
    "lr.png",
    "alignment.png",
  }
  manifest = json.loads((workdir / "manifest.json").read_text())
  assert manifest["config"]["model"]["size"] == "small" and manifest["seeds"]["seed"] == 42
  start = manifest["starts"][0]
  assert start["packages"]["jax"] and start["devices"]["device_count"] == 8
  # The trainer re-ran itself with the caching host allocator (config.host_allocator="cache").
  assert start["host_allocator"] == ("cache" if allocator.library() else "system")
  assert f"host allocator {start['host_allocator']}" in out
  assert start["git"]["sha"] is None or len(start["git"]["sha"]) == 40
  assert manifest["datasets"]["train"]["build_report"]["records"]["kept"] == 40
  probe = json.loads((workdir / "eval" / "report.json").read_text())
  assert list(probe["models"]) == ["random init", "pretrained"] and set(probe["tasks"]) == {
    "demo_sex",
    "demo_risk_high",
  }
  assert probe["protocol"]["lead"] == "I" and (workdir / "eval" / "predictions.npz").is_file()
  # The export is a CLEF-style Lightning checkpoint holding the final weights.
  pytest.importorskip("torch")
  from clef_jax import weights

  exported = weights.load_backbone(
    workdir / "export" / "clef_small.ckpt", backbone="net1d", size="small"
  ).params
  final = weights.load_backbone(workdir).params
  np.testing.assert_array_equal(exported["stem_conv"]["kernel"], final["stem_conv"]["kernel"])


@pytest.fixture(scope="session")
def imported(reference, tmp_path_factory):
  """The reference's weights through both CLIs: workdir -> PyTorch file -> Orbax step 0; None
  without torch."""
  try:
    import torch  # noqa: F401
  except ImportError:
    return None
  from clef_jax.export import __main__ as export_cli

  tmp = tmp_path_factory.mktemp("imported")
  torch_file = tmp / "w.pt"
  assert (
    export_cli.main(
      ["--workdir", str(reference[0]), "--output", str(torch_file), "--format", "state_dict"]
    )
    == 0
  )
  assert (
    export_cli.main(
      [
        "--from-torch",
        str(torch_file),
        "--config",
        str(REPO / "configs" / "small.py") + ":tiny",
        "--workdir",
        str(tmp / "run"),
      ]
    )
    == 0
  )
  return tmp / "run"


@pytest.mark.slow
def test_kill_9_and_resume_is_bit_identical(reference, imported, shared, tmp_path):
  proc = run_main(tmp_path, *TRAIN_ONLY, shared=shared, background=True)
  wait_for_step(proc, tmp_path, 4)
  proc.kill()  # SIGKILL: no chance to clean up
  proc.wait()
  assert proc.returncode == -signal.SIGKILL
  killed_at = max(r["step"] for r in monitoring.read_metrics(tmp_path))
  assert killed_at < STEPS - 1, "the run finished before it could be killed"
  # The workdir checkpoint wins over init_from (precedence: workdir > init_from > fresh init).
  init_from = [f"--config.init_from={imported}"] if imported else []
  again = run_main(tmp_path, *TRAIN_ONLY, *init_from, shared=shared)
  assert again.returncode == 0, again.stderr[-3000:]
  assert "restore: resumed from" in again.stdout and "backbone weights" not in again.stdout
  np.testing.assert_array_equal(losses(tmp_path), losses(reference[0]))


@pytest.mark.slow
def test_export_import_and_init_from(reference, imported, shared, tmp_path):
  from clef_jax import weights

  if imported is None:
    pytest.skip("needs torch")
  final = weights.load_backbone(reference[0]).params
  back = weights.load_backbone(imported).params  # checkpoints/0 of the import
  for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(final)):
    np.testing.assert_array_equal(a, b)
  run = run_main(
    tmp_path,
    *TRAIN_ONLY,
    f"--config.init_from={imported}",
    shared=shared,
    config=TINY.replace(f"steps={STEPS}", "steps=2"),
  )
  assert run.returncode == 0, run.stderr[-3000:]
  assert f"restore: backbone weights from {imported}" in run.stdout
  assert len(losses(tmp_path)) == 2


def _nan_noise_file(path):
  """A noise bank (DATA_noises_real.mat layout) full of NaN: every noised view becomes NaN."""
  import scipy.io

  scipy.io.savemat(path, {k: np.full((noise.NOISE_ROWS, 3000), np.nan) for k in noise.NOISE_KEYS})
  return path


@pytest.mark.slow
def test_sigterm_saves_and_a_non_finite_loss_keeps_that_checkpoint(reference, shared, tmp_path):
  proc = run_main(tmp_path, *TRAIN_ONLY, shared=shared, background=True)
  wait_for_step(proc, tmp_path, 2)
  proc.send_signal(signal.SIGTERM)
  _, stderr = proc.communicate(timeout=120)
  assert proc.returncode == 128 + signal.SIGTERM, stderr[-2000:]
  assert "Preempted (SIGTERM): saved" in stderr and "Traceback" not in stderr
  saved = checkpoint_steps(tmp_path)[-1]
  assert saved == len(losses(tmp_path)) < STEPS  # saved exactly where it stopped
  np.testing.assert_array_equal(losses(tmp_path), losses(reference[0])[:saved])

  # Resume on poisoned input (same program, no recompilation): the first step is non-finite.
  nan_mat = _nan_noise_file(tmp_path / "nan.mat")
  bad = run_main(tmp_path, *TRAIN_ONLY, f"--config.input.noise_mat={nan_mat}", shared=shared)
  assert bad.returncode == 1, bad.stderr[-2000:]
  last = bad.stderr.strip().splitlines()[-1]
  assert last.startswith("error: Non-finite loss") and f"at step {saved}" in last
  assert f"checkpoints/{saved}" in last and "Traceback" not in bad.stderr
  assert checkpoint_steps(tmp_path)[-1] == saved  # nothing written after it
  assert len(losses(tmp_path)) == saved


@pytest.mark.slow
def test_a_damaged_latest_checkpoint_resumes_from_the_previous_step(reference, shared, tmp_path):
  shutil.copytree(reference[0] / "checkpoints", tmp_path / "checkpoints")
  shutil.copy(reference[0] / "metrics.jsonl", tmp_path / "metrics.jsonl")
  state_dir = tmp_path / "checkpoints" / str(STEPS) / "state"
  damaged = max(
    (p for p in state_dir.rglob("*") if p.parent.name == "d"), key=lambda p: p.stat().st_size
  )  # The largest array data file ...
  damaged.write_bytes(damaged.read_bytes()[:100])  # ... cut short, as by a full disk.
  run = run_main(tmp_path, *TRAIN_ONLY, shared=shared)
  assert run.returncode == 0, run.stderr[-3000:]
  assert "Traceback" not in run.stderr
  (line,) = [l for l in run.stdout.splitlines() if "unreadable" in l]
  previous = STEPS - 2  # Saved every 2 steps.
  assert line.startswith(f"restore: checkpoint step {STEPS} is unreadable: {state_dir}")
  assert "size 100" in line and f"using step {previous} instead" in line
  assert (
    f"restore: resumed from {tmp_path / 'checkpoints' / str(previous)} (step {previous})"
    in run.stdout
  )
  np.testing.assert_array_equal(losses(tmp_path), losses(reference[0]))  # Steps 6, 7 redone.
  assert checkpoint_steps(tmp_path) == [4, 6, 8]
  # Kept, never deleted: the damaged step with its cut file.
  kept = tmp_path / "unreadable_checkpoints" / str(STEPS) / damaged.relative_to(state_dir.parent)
  assert kept.stat().st_size == 100


@pytest.mark.slow
def test_sigint_saves_and_a_second_trainer_on_the_workdir_is_refused(reference, shared, tmp_path):
  # Same program as the reference (the step does not depend on the run's length), no recompile.
  endless = TINY.replace(f"steps={STEPS}", "steps=100000")
  proc = run_main(tmp_path, *TRAIN_ONLY, shared=shared, config=endless, background=True)
  wait_for_step(proc, tmp_path, 1)
  second = run_main(tmp_path, *TRAIN_ONLY, shared=shared)
  assert second.returncode == 1 and "Traceback" not in second.stderr, second.stderr[-2000:]
  assert (
    second.stderr.strip()
    .splitlines()[-1]
    .startswith(f"error: {tmp_path} is in use by another trainer (pid {proc.pid} on ")
  )
  assert proc.poll() is None, "the second trainer disturbed the first"
  proc.send_signal(signal.SIGINT)  # Ctrl-C
  _, stderr = proc.communicate(timeout=120)
  assert proc.returncode == 128 + signal.SIGINT, stderr[-2000:]
  assert "Interrupted (SIGINT): saved" in stderr and "Traceback" not in stderr
  saved = checkpoint_steps(tmp_path)[-1]
  assert saved == len(losses(tmp_path))  # Saved exactly where it stopped.
  n = min(saved, STEPS)
  np.testing.assert_array_equal(losses(tmp_path)[:n], losses(reference[0])[:n])


@pytest.mark.slow
@pytest.mark.parametrize(
  "config, expected",
  [
    (f"{TINY},batch=12", "error: input.batch_size=12 must be divisible by the 8 devices"),
    (f"{TINY},foo", "error: Unknown config option 'foo'"),
  ],
)
def test_misconfiguration_is_one_clear_line(config, expected, tmp_path, shared):
  proc = run_main(tmp_path, shared=shared, config=config)
  assert proc.returncode == 1
  assert proc.stderr.strip().splitlines()[-1].startswith(expected)
  assert "Traceback" not in proc.stderr


# ------------------------------------------------------------------------------------------------
# Fast checks in this process (no compilation: they stop before the first step).
# ------------------------------------------------------------------------------------------------
def test_medium_without_mimic_stops_at_once_and_says_how_to_build(tmp_path):
  from clef_jax import train_loop
  from clef_jax.configs import medium

  config = medium.get_config()
  with config.unlocked():
    config.input.data_dir = str(tmp_path / "tfds")
  with pytest.raises(train_loop.ConfigError) as e:
    train_loop.train_and_evaluate(config, tmp_path / "run")
  msg = str(e.value)
  assert "mimic_iv_ecg/one_per_patient is not built" in msg
  assert "python -m clef_jax.build mimic_iv_ecg --config one_per_patient" in msg
  assert "configs/medium.py:demo" in msg


def test_config_options():
  from clef_jax.configs import base, large, small

  config = small.get_config("demo,simclr,lead=II,bf16,remat,fsdp,steps=7,batch=16,lr=0.01")
  assert (
    config.method,
    config.input.lead,
    config.model.dtype,
    config.model.remat,
    config.mesh.strategy,
    config.total_steps,
    config.input.batch_size,
    config.optim.learning_rate,
  ) == ("simclr", "II", "bfloat16", True, "fsdp", 7, 16, 0.01)
  assert config.input.window == small.DEMO["input.window"] and config.input.auto_build
  paper = base.get_config()  # docs/method.md §E.1
  assert (
    paper.optim.learning_rate,
    paper.optim.weight_decay,
    paper.input.batch_size,
    paper.loss.temperature,
    paper.loss.alpha,
    paper.num_epochs,
    paper.method,
    paper.input.lead,
    paper.input.dataset,
  ) == (1e-4, 5e-4, 64, 0.07, 0.2, 100, "clef", "random", "mimic_iv_ecg/one_per_patient")
  assert base.get_config("physionet_challenge,msformer").model.name == "msformer"
  assert large.get_config().mesh.strategy == "fsdp"
  for bad in ("foo", "steps=x", "method=dino", "lead"):
    with pytest.raises(ValueError):
      small.get_config(bad)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_match_one(reference, shared, tmp_path):
  """2 local processes x 4 CPU devices (jax.distributed on localhost, gloo) == 1 x 8 devices.

  Each process feeds its half of every global batch; only process 0 prints and writes the logs;
  both write their shards of the checkpoint. The global batch holds the same records in another
  row order (each process takes every other record of the shuffled stream), so the losses agree
  to float32 rounding, not bit for bit.
  """
  port = _free_port()
  procs = [
    run_main(
      tmp_path,
      *TRAIN_ONLY,
      "--distributed=on",
      f"--coordinator_address=localhost:{port}",
      "--num_processes=2",
      f"--process_id={i}",
      shared=shared,
      devices=4,
      background=True,
    )
    for i in range(2)
  ]
  outs = [p.communicate(timeout=600) for p in procs]
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  assert "mesh: 8 devices (cpu) in 2 process(es)" in outs[0][0]
  # Only process 0 prints. Gloo's C++ also writes "[Gloo] Rank 1 is connected to ..." to both
  # processes' stdout, from several threads, so its lines can arrive split; instead of parsing
  # those, check that none of process 0's own lines shows up in process 1's output.
  gloo = ("Gloo", "Rank", "connected", "peer ranks")
  own = [
    l for l in outs[0][0].splitlines() if len(l.strip()) >= 12 and not any(w in l for w in gloo)
  ]
  assert len(own) >= 3, outs[0][0]
  assert not [l for l in own if l in outs[1][0]], outs[1][0][-3000:]
  assert "mesh:" not in outs[1][0] and "done in" not in outs[1][0]
  np.testing.assert_allclose(losses(tmp_path), losses(reference[0]), rtol=2e-5)
  data = tmp_path / "checkpoints" / str(STEPS) / "data"
  assert sorted(p.name for p in data.glob("process_*.json")) == [
    "process_0-of-2.json",
    "process_1-of-2.json",
  ]
