"""Command-line conventions: `--help` exits 0 everywhere; old flag spellings still work, with a note."""

from __future__ import annotations

import io
import os
import pathlib
import subprocess
import sys

import pytest

from clef_jax import cli

REPO = pathlib.Path(__file__).resolve().parents[1]
ENV = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))

# Every command line of the package, and a flag its help must list.
CLIS = {
  "clef_jax.build": "--manual_dir",
  "clef_jax.main": "--workdir",
  "clef_jax.export": "--from_torch",
  "clef_jax.evaluate": "--model_workdir",
  "clef_jax.embed": "--torch_weights",
  "clef_jax.bench": "model",
  "clef_jax.bench model": "--batch_size",
  "clef_jax.bench loss": "--max_batch",
  "clef_jax.bench input": "--batch_size",
  "clef_jax.bench device": "--num_records",
}
if (REPO / "clef_jax" / "plan.py").exists() or (REPO / "clef_jax" / "plan").is_dir():
  CLIS["clef_jax.plan"] = "--"


def _run(args, *, mode="-m", **kw):
  return subprocess.run(
    [sys.executable, mode, *args],
    cwd=REPO,
    env=ENV,
    capture_output=True,
    text=True,
    timeout=300,
    **kw,
  )


@pytest.mark.parametrize("module", sorted(CLIS))
def test_help_exits_zero(module):
  for flag in ("--help", "-h"):
    proc = _run([*module.split(), flag])
    assert proc.returncode == 0, (flag, proc.stdout[-500:], proc.stderr[-2000:])
    assert CLIS[module] in proc.stdout, proc.stdout[-2000:]
    assert "Traceback" not in proc.stdout + proc.stderr


# Imports that take a second or more; a command line's module must not need them before it parses
# its flags (its --help, its one-line refusals of bad arguments, and the host allocator's re-exec,
# which runs the module's imports twice).
HEAVY = ("jax", "flax", "torch", "scipy.signal", "tensorflow_datasets", "grain")


def test_command_line_modules_import_light():
  modules = sorted({m.split()[0] for m in CLIS} | {"clef_jax.encoder"})
  code = (
    "import importlib, sys\n"
    f"for m in {modules!r}:\n"
    "  importlib.import_module(m)\n"
    f"  heavy = [h for h in {HEAVY!r} if h in sys.modules]\n"
    "  assert not heavy, f'importing {m} imported {heavy}'\n"
    "print('ok')\n"
  )
  proc = _run([code], mode="-c")
  assert proc.stdout.strip() == "ok", proc.stderr[-2000:]


def test_rename_deprecated():
  known = {"batch_size", "torch_weights", "model_workdir", "output"}
  notes = io.StringIO()
  out = cli.rename_deprecated(
    [
      "--torch-weights=a.ckpt",
      "--batch",
      "8",
      "--torch-weights",
      "b",
      "pos",
      "--output=x",
      "--",
      "--batch",
    ],
    known,
    {"batch": "batch_size"},
    stream=notes,
  )
  assert out == [
    "--torch_weights=a.ckpt",
    "--batch_size",
    "8",
    "--torch_weights",
    "b",
    "pos",
    "--output=x",
    "--",
    "--batch",
  ]
  # One note per old spelling, however often it is used; nothing after `--` is touched.
  assert notes.getvalue().splitlines() == [
    "note: --torch-weights is deprecated; use --torch_weights.",
    "note: --batch is deprecated; use --batch_size.",
  ]
  # Unknown hyphenated flags and config overrides are left for the parser to judge.
  assert cli.rename_deprecated(
    ["--no-such", "--config.input.batch-size=3"], known, stream=notes
  ) == ["--no-such", "--config.input.batch-size=3"]
  with pytest.raises(cli.UsageError, match="--workdir and --model_workdir both given"):
    cli.rename_deprecated(
      ["--workdir=a", "--model_workdir=b"], known, {"workdir": "model_workdir"}, stream=notes
    )


def test_argparse_alias_and_one_line_errors(capsys):
  from clef_jax.bench import input as bench_input
  from clef_jax.bench import model as bench_model

  assert bench_model.parse_args(["--batch", "8"]).batch == 8
  assert "note: --batch is deprecated; use --batch_size." in capsys.readouterr().err
  assert bench_input.parse_args(["--batch=16"]).batch == 16
  assert "--batch is deprecated" in capsys.readouterr().err
  with pytest.raises(SystemExit) as e:
    bench_model.parse_args(["--batch_size", "x"])
  assert e.value.code == 2
  err = capsys.readouterr().err
  assert len(err.strip().splitlines()) == 1 and "--batch_size" in err, err


def test_old_spellings_per_cli(tmp_path, capsys):
  """One old spelling per CLI reaches its flag: in-process where parsing is cheap."""
  from clef_jax import build, embed
  from clef_jax.bench import loss as bench_loss
  from clef_jax.export import __main__ as export_cli

  missing = tmp_path / "missing"
  # embed: --torch-weights.
  assert (
    embed.main(
      [
        "--torch-weights",
        str(missing / "w.ckpt"),
        "--size",
        "small",
        "--input",
        str(missing / "rec.hea"),
        "--output",
        str(tmp_path / "e.npy"),
      ]
    )
    == 1
  )
  err = capsys.readouterr().err
  assert "note: --torch-weights is deprecated; use --torch_weights." in err
  # export: --from-torch (refused for the missing file, after the alias was applied).
  assert (
    export_cli.main(
      [
        "--from-torch",
        str(missing / "w.ckpt"),
        "--config",
        "configs/small.py",
        "--workdir",
        str(tmp_path / "w"),
      ]
    )
    == 1
  )
  err = capsys.readouterr().err
  assert "note: --from-torch is deprecated; use --from_torch." in err
  assert str(missing / "w.ckpt") in err.splitlines()[-1]
  # build: --data-dir / --manual-dir (hyphenated spellings of the snake_case flags).
  with pytest.raises(SystemExit) as e:
    build.main(
      ["no_such_dataset", "--data-dir", str(tmp_path / "tfds"), "--manual-dir", str(missing)]
    )
  assert e.value.code == 2
  err = capsys.readouterr().err
  assert "note: --data-dir is deprecated; use --data_dir." in err
  assert "no_such_dataset" in err.splitlines()[-1]
  # bench loss: --max-batch.
  rows = bench_loss.run(
    ["--max-batch", "64", "--repeats", "1", "--dim", "4", "--losses", "info_nce"]
  )
  assert rows and max(r["batch"] for r in rows) <= 64
  assert "note: --max-batch is deprecated; use --max_batch." in capsys.readouterr().err


def test_absl_old_spellings(tmp_path):
  """main and evaluate (absl): hyphenated and renamed flags, in one process each."""
  proc = _run(
    [
      "clef_jax.main",
      "--config=configs/small.py:tiny",
      f"--workdir={tmp_path / 'w'}",
      "--compilation-cache=",
      "--config.totl_steps=5",
    ]
  )
  assert proc.returncode == 1, proc.stderr[-2000:]
  assert "note: --compilation-cache is deprecated; use --compilation_cache." in proc.stderr
  assert proc.stderr.strip().splitlines()[-1] == (
    "error: --config.totl_steps=5: no config field 'totl_steps' (did you mean total_steps?)"
  )
  assert not (tmp_path / "w").exists()
  proc = _run(
    [
      "clef_jax.evaluate",
      "--config=configs/eval.py:sex",
      f"--workdir={tmp_path}",
      f"--model_workdir={tmp_path}",
      f"--output={tmp_path / 'out'}",
    ]
  )
  assert proc.returncode == 1
  assert proc.stderr.strip().splitlines()[-1] == (
    "error: --workdir and --model_workdir both given; use --model_workdir only."
  )
  assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------------
# The caching host allocator at the start of each command.
# ------------------------------------------------------------------------------------------------
def test_start_host_allocator(monkeypatch, capsys):
  from clef_jax import allocator

  calls = []
  monkeypatch.setattr(allocator, "reexec_preloaded", calls.append)
  cli.start_host_allocator("cache", "--config.host_allocator")
  cli.start_host_allocator("system", "--config.host_allocator")
  cli.start_host_allocator("cache", "--config.host_allocator", reexec=False)
  assert calls == ["cache", "system"]
  with pytest.raises(SystemExit) as e:
    cli.start_host_allocator("jemalloc", "--host_allocator", reexec=False)
  assert e.value.code == 1 and calls == ["cache", "system"]
  err = capsys.readouterr().err.strip()
  assert err == (
    "error: host_allocator='jemalloc': must be one of cache, system; set --host_allocator=..."
  )


_START_PROBE = """
import json, sys
from clef_jax import cli, embed
from clef_jax.evaluation import cli as eval_cli

seen = []

class Started(Exception):
  pass

def start(choice, setting, *, reexec=True):
  seen.append([choice, setting, reexec])
  raise Started

cli.start_host_allocator = start
from_command_line = sys.argv[1] == "1"
out, tmp = sys.argv[2], sys.argv[3]
args = ["clef_jax.evaluate", "--config=configs/eval.py:demo", "--config.host_allocator=system",
        "--output=" + out]
sys.argv = args
try:
  eval_cli.main(None if from_command_line else args)
except Started:
  pass
embed_args = ["--workdir", tmp, "--input", tmp, "--output", tmp + "/e.npy"]
sys.argv = ["clef_jax.embed", *embed_args]
try:
  embed.main(None if from_command_line else embed_args)
except Started:
  pass
print(json.dumps(seen))
"""


@pytest.mark.parametrize("from_command_line", [True, False])
def test_evaluate_and_embed_start_the_allocator_only_from_the_command_line(
  from_command_line, tmp_path
):
  """Run as commands (argv None) they re-execute with the configured allocator before loading
  anything; called in-process with their own argv they only check the setting."""
  import json

  probe_args = [_START_PROBE, str(int(from_command_line)), str(tmp_path / "eval"), str(tmp_path)]
  proc = _run(probe_args, mode="-c")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert json.loads(proc.stdout.strip().splitlines()[-1]) == [
    ["system", "--config.host_allocator", from_command_line],
    ["cache", "--host_allocator", from_command_line],
  ]
