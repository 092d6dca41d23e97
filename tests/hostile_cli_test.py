"""Hostile inputs to every command line, run as a user runs them (fresh `python -m` processes).

Each case asserts: exit status 1 or 2, no Python traceback, the `error:` line names the file or
field, and nothing the user did not name was created or overwritten. The hostile files come
from `tests/hostile.py`. The cases that load weights or start jax cost a few seconds each as a
fresh process: in the families of such cases one or two representatives run as fresh processes
and the others call the same `main(argv)` in this process (`cli_here`), or are marked slow.
"""

from __future__ import annotations

import dataclasses
import fcntl
import importlib
import os
import pathlib
import subprocess
import sys

import hostile
import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
ENV = dict(
  os.environ,
  JAX_PLATFORMS="cpu",
  PYTHONPATH=str(REPO),
  JAX_DISABLE_MOST_OPTIMIZATIONS="1",
  OPENBLAS_NUM_THREADS="1",
)
ENV.pop("XLA_FLAGS", None)  # One CPU device: the subprocesses need no simulated mesh.
slow = pytest.mark.slow


@dataclasses.dataclass
class Run:
  code: int
  out: str
  err: str

  @property
  def errors(self) -> list[str]:
    return [
      line for line in self.err.splitlines() if "error: " in line or line.startswith("plan: ")
    ]  # plan's own prefix


def cli(module: str, *args, timeout: float = 180, env: dict | None = None) -> Run:
  proc = subprocess.run(
    [sys.executable, "-m", module, *map(str, args)],
    cwd=REPO,
    env=env or ENV,
    capture_output=True,
    text=True,
    timeout=timeout,
  )
  return Run(proc.returncode, proc.stdout, proc.stderr)


def cli_here(capfd, module: str, *args) -> Run:
  """`cli`'s command line through the module's `main(argv)` in this process.

  For a family's further cases once its representative has run as a fresh process: the same
  parsing, loading and refusal code, without another interpreter and jax start. `capfd`
  captures at the file descriptors, so C++ and absl output counts as it does in `cli`.
  """
  target = module + ".__main__" if module == "clef_jax.export" else module
  main = importlib.import_module(target).main
  capfd.readouterr()
  try:
    code = main([str(a) for a in args])
  except SystemExit as e:  # argparse's own refusals
    code = e.code
  out, err = capfd.readouterr()
  return Run(code, out, err)


def refused(run: Run, *says: str, code: int | None = None) -> str:
  """Asserts a one-line refusal; returns the error line."""
  assert run.code in ((code,) if code else (1, 2)), (run.code, run.err[-3000:])
  assert "Traceback" not in run.out + run.err, run.err[-3000:]
  assert len(run.errors) == 1, run.err[-3000:]
  line = run.errors[0]
  for phrase in says:
    assert phrase.lower() in line.lower(), (phrase, line)
  return line


def snapshot(root: pathlib.Path) -> dict[str, bytes]:
  return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------------
# Shared files: hostile records and weights, made once.
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def files(tmp_path_factory) -> tuple[pathlib.Path, dict[str, hostile.Case]]:
  root = tmp_path_factory.mktemp("hostile")
  return root, hostile.write_all(root)


@pytest.fixture(scope="session")
def state_dict() -> dict[str, np.ndarray]:
  """A Net1D-small state dict (random weights), as numpy arrays with bare keys."""
  pytest.importorskip("torch")
  import jax
  import jax.numpy as jnp

  from clef_jax import models
  from clef_jax.export import to_torch_state_dict

  model = models.create_backbone("net1d", "small")
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 1)))["params"]
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda s: (0.1 * rng.standard_normal(s.shape)).astype(np.float32), shapes)
  return {k: v.numpy() for k, v in to_torch_state_dict(params, size="small").items()}


@pytest.fixture(scope="session")
def weights(state_dict, tmp_path_factory) -> dict[str, tuple[pathlib.Path, str]]:
  return hostile.weight_files(tmp_path_factory.mktemp("weights"), state_dict)


@pytest.fixture(scope="session")
def good(weights) -> pathlib.Path:
  return weights["truncated_ckpt"][0].with_name("good.ckpt")


def embed(good_weights, *args, capfd=None, **kw) -> Run:
  """`python -m clef_jax.embed` with good weights; in this process (`cli_here`) given capfd."""
  args = ("--torch_weights", good_weights, "--size", "small", "--quiet", "--window_s", 2, *args)
  if capfd is not None:
    return cli_here(capfd, "clef_jax.embed", *args)
  return cli("clef_jax.embed", *args, **kw)


# ------------------------------------------------------------------------------------------------
# embed: sampling rates, signals, files, arrays, outputs, weights.
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
  "name",
  [
    "fs_zero",
    "fs_nan",
    "cli_fs_negative",
    pytest.param("fs_negative", marks=slow),
    pytest.param("fs_absurd", marks=slow),
    pytest.param("cli_fs_zero", marks=slow),
    pytest.param("cli_fs_nan", marks=slow),
    pytest.param("cli_fs_absurd", marks=slow),
  ],
)
def test_embed_sampling_rate(name, files, good, tmp_path):
  root, cases = files
  case = cases[name]
  out = tmp_path / "out" / "e.npy"
  line = refused(embed(good, *case.args, "--output", out), case.says, code=case.code)
  assert ("--fs" in line) if name.startswith("cli_") else (str(root) in line)
  assert not out.parent.exists()


def test_embed_directory_skips_unusable_signals_by_name(files, good, tmp_path):
  """0.2-s, all-zero, constant and NaN-only records beside one good record (with non-UTF-8
  header comments): the good one is embedded, each bad one is named with its reason."""
  root, _ = files
  d = tmp_path / "records"
  d.mkdir()
  names = ["short_record", "all_zero", "constant", "nan_only", "latin1_comments"]
  for name in names:
    for suffix in (".hea", ".dat"):
      (d / f"{name}{suffix}").write_bytes((root / f"{name}{suffix}").read_bytes())
  out = tmp_path / "e.npy"
  run = embed(good, "--input", d, "--output", out)
  assert run.code == 0 and "Traceback" not in run.err, run.err[-3000:]
  assert set((tmp_path / "e.ids.txt").read_text().split()) == {"latin1_comments"}
  assert np.isfinite(np.load(out)).all()
  skipped = {
    line.split()[1].rstrip(":"): line
    for line in run.err.splitlines()
    if line.startswith("skipped ")
  }
  for name, reason in (
    ("short_record", "short"),
    ("all_zero", "flat"),
    ("constant", "flat"),
    ("nan_only", "missing"),
  ):
    (key,) = [k for k in skipped if k.endswith(name)]
    assert reason in skipped[key], skipped[key]
  assert "skipped records: 2 flat, 1 missing, 1 short" in run.out, run.out


@pytest.mark.parametrize(
  "name, says",
  [
    ("all_zero", "flat"),
    ("short_record", "0.2 s"),
    ("constant", "flat"),
    ("nan_only", "missing"),
  ],
)
def test_embed_one_unusable_record(name, says, files, good, tmp_path, capfd):
  root, cases = files
  out = tmp_path / "out" / "e.npy"
  if name == "all_zero":  # A fresh process; the others in this one.
    run = embed(good, *cases[name].args, "--output", out)
  else:
    run = embed(good, *cases[name].args, "--output", out, capfd=capfd)
  line = refused(run, name, says, "no window", code=1)
  assert str(root) in line and not out.parent.exists()


@pytest.mark.parametrize(
  "name", ["truncated_dat", pytest.param("header_longer_than_file", marks=slow)]
)
def test_embed_signal_file_shorter_than_its_header(name, files, good, tmp_path):
  root, cases = files
  out = tmp_path / "out" / "e.npy"
  refused(
    embed(good, *cases[name].args, "--output", out),
    f"{name}.dat",
    "shorter than the header",
    code=1,
  )
  assert not out.parent.exists()


@pytest.mark.parametrize(
  "name",
  [
    "npy_4d",
    pytest.param("npy_strings", marks=slow),
    pytest.param("npy_complex", marks=slow),
    pytest.param("npy_11_leads", marks=slow),
    pytest.param("npy_garbage", marks=slow),
  ],
)
def test_embed_npy_wrong_dtype_or_shape(name, files, good, tmp_path):
  root, cases = files
  case = cases[name]
  out = tmp_path / "out" / "e.npy"
  line = refused(
    embed(good, *case.args, "--fs", 500, "--unit", "mV", "--output", out), case.says, code=case.code
  )
  assert ".npy" in line and not out.parent.exists()


def test_embed_npy_object_array_is_never_unpickled(good, tmp_path):
  marker = tmp_path / "PICKLE_RAN"
  bomb = hostile.pickle_bomb_npy(tmp_path / "bomb.npy", marker)
  out = tmp_path / "out" / "e.npy"
  refused(
    embed(good, "--input", bomb, "--fs", 500, "--unit", "mV", "--output", out),
    str(bomb),
    "never unpickled",
    code=1,
  )
  assert not marker.exists() and not out.parent.exists()


def test_embed_output_under_a_file_or_existing_is_refused_and_kept(files, good, tmp_path):
  root, cases = files
  ok = cases["cli_fs_zero"].args[:2] + ("--fs", "500", "--unit", "mV")
  blocker = tmp_path / "notes.txt"
  blocker.write_text("mine")
  refused(embed(good, *ok, "--output", blocker / "e.npy"), str(blocker), code=2)
  assert blocker.read_text() == "mine"
  existing = tmp_path / "e.npy"
  np.save(existing, np.arange(3))
  before = existing.read_bytes()
  refused(embed(good, *ok, "--output", existing), str(existing), "--overwrite", code=2)
  assert existing.read_bytes() == before


def test_embed_output_in_a_read_only_directory(files, good, tmp_path):
  if os.geteuid() == 0:
    pytest.skip(
      "running as root: a read-only directory is still writable (the check is "
      "tests/encoder_test.py::test_cli_read_only_output_directory, in-process)"
    )
  root, cases = files
  ro = tmp_path / "ro"
  ro.mkdir()
  ro.chmod(0o500)
  try:
    ok = cases["cli_fs_zero"].args[:2] + ("--fs", "500", "--unit", "mV")
    refused(embed(good, *ok, "--output", ro / "e.npy"), "not writable", code=2)
    assert not list(ro.iterdir())
  finally:
    ro.chmod(0o700)


@pytest.mark.parametrize(
  "name",
  [
    "nan",
    "truncated_safetensors",
    "one_inf",
    "int64",
    "bool",
    "wrong_shape",
    "header_too_large_safetensors",
    "header_not_json_safetensors",
    "empty_safetensors",
    "truncated_ckpt",
    "empty_ckpt",
    "text_ckpt",
    "code_ckpt",
  ],
)
def test_embed_bad_weights(name, weights, files, tmp_path, capfd):
  root, cases = files
  path, says = weights[name]
  out = tmp_path / "out" / "e.npy"
  args = ["--torch_weights", path, "--size", "small", "--quiet", *cases["cli_fs_zero"].args[:2]]
  args += ["--fs", 500, "--unit", "mV", "--output", out]
  # One safetensors and one tensor-value case as fresh processes; the rest in this process.
  if name in ("nan", "truncated_safetensors"):
    run = cli("clef_jax.embed", *args)
  else:
    run = cli_here(capfd, "clef_jax.embed", *args)
  refused(run, says, code=1)
  assert not out.parent.exists()


def test_embed_weights_of_the_wrong_size_say_which_size(good, files, tmp_path):
  root, cases = files
  out = tmp_path / "out" / "e.npy"
  run = cli(
    "clef_jax.embed",
    "--torch_weights",
    good,
    "--size",
    "medium",
    "--quiet",
    *cases["cli_fs_zero"].args[:2],
    "--fs",
    500,
    "--unit",
    "mV",
    "--output",
    out,
  )
  refused(run, str(good), "does not match", "Net1D-small", code=1)
  assert not out.parent.exists()


def test_every_generated_weight_file_is_refused_by_the_loader(weights):
  """All of them, in this process (the loader the CLIs share), by name and reason."""
  from clef_jax.export import torch_files

  for name, (path, says) in weights.items():
    with pytest.raises(ValueError) as e:
      torch_files.load_torch(path, size="small")
    message = str(e.value)
    assert "\n" not in message and says.lower() in message.lower(), (name, message)
    if "readable" in says:
      assert str(path) in message, (name, message)
  assert not path.with_name("PICKLE_RAN").exists()
  good = torch_files.load_torch(path.with_name("good.safetensors"), size="small")
  assert good["stem_conv"]["kernel"].dtype == np.float32


# ------------------------------------------------------------------------------------------------
# main: config values and typos, the workdir (Ctrl-C and SIGTERM: main_test.py).
# ------------------------------------------------------------------------------------------------
TINY = "--config=configs/small.py:tiny,steps=2"


@pytest.mark.parametrize(
  "override, field",
  [
    ("--config.total_steps=-5", "total_steps=-5"),
    ("--config.input.batch_size=0", "input.batch_size=0"),
    pytest.param("--config.input.window=0", "input.window=0", marks=slow),
    pytest.param("--config.input.batch_size=-8", "input.batch_size=-8", marks=slow),
    pytest.param("--config.input.window=-100", "input.window=-100", marks=slow),
  ],
)
def test_main_zero_or_negative_steps_batch_window(override, field, tmp_path):
  workdir = tmp_path / "run"
  line = refused(
    cli("clef_jax.main", TINY, f"--workdir={workdir}", override),
    field,
    f"set --config.{field.split('=')[0]}",
    code=1,
  )
  assert line.startswith("error: ")
  assert not workdir.exists()  # checked before it is created


@pytest.mark.parametrize(
  "args, says",
  [
    (("--config.totl_steps=5",), "did you mean total_steps"),
    (("--config.input.bach_size=4",), "did you mean batch_size"),
    (("--config.input.batch_size=four",), "--config.input.batch_size=four"),
    (("--config.host_allocator=jemalloc",), ("cache, system", "set --config.host_allocator")),
  ],
)
def test_main_config_override_typos(args, says, tmp_path):
  workdir = tmp_path / "run"
  says = (says,) if isinstance(says, str) else says
  refused(cli("clef_jax.main", TINY, f"--workdir={workdir}", *args), *says, code=1)
  assert not workdir.exists()


def test_main_config_option_typo_and_missing_file(tmp_path):
  workdir = tmp_path / "run"
  refused(
    cli("clef_jax.main", "--config=configs/small.py:tiny,stpes=2", f"--workdir={workdir}"),
    "stpes",
    "valid:",
    code=1,
  )
  refused(
    cli("clef_jax.main", "--config=configs/smal.py", f"--workdir={workdir}"),
    "--config configs/smal.py",
    "no such file",
    code=1,
  )
  assert not workdir.exists()


def test_main_workdir_under_a_regular_file(tmp_path):
  blocker = tmp_path / "f"
  blocker.write_text("mine")
  refused(
    cli("clef_jax.main", TINY, f"--workdir={blocker / 'run'}"),
    "--workdir",
    f"{blocker} is a file",
    code=1,
  )
  assert blocker.read_text() == "mine"


# ------------------------------------------------------------------------------------------------
# export.
# ------------------------------------------------------------------------------------------------
def test_export_refuses_to_overwrite_and_bad_output_paths(good, tmp_path):
  """The workdir is made from `good` by the reverse conversion; the forward one then meets an
  existing file (kept unless --overwrite) and a path under a regular file."""
  workdir = tmp_path / "wd"
  run = cli(
    "clef_jax.export", "--from_torch", good, "--config", "configs/small.py", "--workdir", workdir
  )
  assert run.code == 0, run.err[-3000:]
  existing = tmp_path / "mine.ckpt"
  existing.write_bytes(b"user data")
  refused(
    cli("clef_jax.export", "--workdir", workdir, "--output", existing),
    str(existing),
    "--overwrite",
    code=2,
  )
  assert existing.read_bytes() == b"user data"
  refused(
    cli("clef_jax.export", "--workdir", workdir, "--output", existing / "x.ckpt"),
    f"{existing} is a file",
    code=2,
  )
  before = snapshot(workdir)
  refused(
    cli(
      "clef_jax.export", "--from_torch", good, "--config", "configs/small.py", "--workdir", workdir
    ),
    "already holds checkpoints",
    code=1,
  )
  assert snapshot(workdir) == before
  run = cli("clef_jax.export", "--workdir", workdir, "--output", existing, "--overwrite")
  assert run.code == 0, run.err[-3000:]
  from clef_jax.export import torch_files

  loaded = torch_files.load_torch(existing, size="small")
  np.testing.assert_array_equal(
    loaded["stem_conv"]["kernel"], torch_files.load_torch(good, size="small")["stem_conv"]["kernel"]
  )


@pytest.mark.parametrize(
  "name",
  [
    "bool",
    "header_too_large_safetensors",
    "empty_ckpt",
  ],
)
def test_export_import_of_bad_weights_writes_no_workdir(name, weights, tmp_path, capfd):
  path, says = weights[name]
  workdir = tmp_path / "wd"
  args = ("--from_torch", path, "--config", "configs/small.py", "--workdir", workdir)
  if name == "bool":  # A fresh process; the others in this one.
    run = cli("clef_jax.export", *args)
  else:
    run = cli_here(capfd, "clef_jax.export", *args)
  refused(run, says, code=1)
  assert not workdir.exists()


def test_export_missing_workdir_and_config(good, tmp_path):
  refused(
    cli("clef_jax.export", "--workdir", tmp_path / "nope", "--output", tmp_path / "o.ckpt"),
    "no training workdir",
    str(tmp_path / "nope"),
    code=1,
  )
  refused(
    cli(
      "clef_jax.export",
      "--from_torch",
      good,
      "--config",
      "configs/smal.py",
      "--workdir",
      tmp_path / "wd",
    ),
    "configs/smal.py",
    code=1,
  )
  assert not (tmp_path / "o.ckpt").exists() and not (tmp_path / "wd").exists()


# ------------------------------------------------------------------------------------------------
# evaluate.
# ------------------------------------------------------------------------------------------------
def _eval_config(files) -> str:
  root, _ = files
  return f"--config=configs/eval.py:sex,wfdb={root},max_records=4,epochs=1"


def test_evaluate_keeps_an_existing_report_and_checks_the_output(files, good, tmp_path):
  out = tmp_path / "report"
  out.mkdir()
  (out / "report.md").write_text("my report")
  refused(
    cli(
      "clef_jax.evaluate", _eval_config(files), f"--torch_weights={good}@small", f"--output={out}"
    ),
    "report.md",
    "--overwrite",
    code=1,
  )
  assert snapshot(out) == {"report.md": b"my report"}
  blocker = tmp_path / "f"
  blocker.write_text("mine")
  refused(
    cli(
      "clef_jax.evaluate",
      _eval_config(files),
      f"--torch_weights={good}@small",
      f"--output={blocker / 'r'}",
    ),
    f"{blocker} is a file",
    code=1,
  )


@pytest.mark.parametrize(
  "args, says",
  [
    (("--config.sed=3",), "did you mean seed"),
    (("--config=configs/eval.py:sex,wfdbb=x",), "wfdbb"),
    (("--config.host_allocator=tcmalloc",), "must be one of cache, system; set --config.host"),
    pytest.param(("--config=configs/evl.py:sex",), "--config configs/evl.py", marks=slow),
  ],
)
def test_evaluate_config_typos(args, says, files, good, tmp_path):
  config = [a for a in args if a.startswith("--config=")] or [_eval_config(files)]
  rest = [a for a in args if not a.startswith("--config=")]
  out = tmp_path / "r"
  refused(
    cli("clef_jax.evaluate", *config, *rest, f"--torch_weights={good}@small", f"--output={out}"),
    says,
    code=1,
  )
  assert not out.exists()


@pytest.mark.parametrize("name", ["truncated_safetensors", pytest.param("nan", marks=slow)])
def test_evaluate_bad_weights_before_any_work(name, weights, files, tmp_path):
  path, says = weights[name]
  out = tmp_path / "r"
  refused(
    cli(
      "clef_jax.evaluate", _eval_config(files), f"--torch_weights={path}@small", f"--output={out}"
    ),
    says,
    code=1,
  )
  assert not out.exists() or not any(out.iterdir())


# ------------------------------------------------------------------------------------------------
# build.
# ------------------------------------------------------------------------------------------------
def test_build_bad_arguments(tmp_path):
  blocker = tmp_path / "f"
  blocker.write_text("mine")
  refused(
    cli("clef_jax.build", "synthetic_ecg", "--config", "tiny", "--data_dir", blocker / "tfds"),
    "--data_dir",
    f"{blocker} is a file",
    code=2,
  )
  data = tmp_path / "tfds"
  refused(
    cli("clef_jax.build", "synthetic_ecg", "--config", "tinny", "--data_dir", data),
    "--config tinny",
    "tiny",
    code=2,
  )
  refused(
    cli("clef_jax.build", "synthetic_ecg", "--option", "num_subjectz=3", "--data_dir", data),
    "num_subjectz",
    code=2,
  )
  refused(
    cli("clef_jax.build", "synthetic_ecg", "--option", "num_subjects=-3", "--data_dir", data),
    "--option num_subjects=-3",
    "at least 1",
    code=2,
  )
  refused(
    cli("clef_jax.build", "ptbxl", "--data_dir", data, "--manual_dir", tmp_path / "nope"),
    "--manual_dir",
    code=2,
  )
  refused(cli("clef_jax.build", "synthetic_eg", "--data_dir", data), "synthetic_eg", code=2)
  assert blocker.read_text() == "mine" and not data.exists()


def test_build_cleans_a_killed_builds_leftovers_and_refuses_a_concurrent_one(tmp_path):
  data = tmp_path / "tfds"
  args = ("synthetic_ecg", "--config", "tiny", "--data_dir", data)
  run = cli("clef_jax.build", *args)
  assert run.code == 0, run.err[-3000:]
  version = data / "synthetic_ecg" / "tiny" / "1.0.0"
  built = snapshot(version)
  # A build killed while writing, and one killed during --overwrite after the new version was
  # renamed into place: both leftovers go, the complete version stays as it was.
  leftovers = hostile.killed_build_leftovers(version, replaced=True)
  run = cli("clef_jax.build", *args)
  assert run.code == 0 and "Traceback" not in run.err, run.err[-3000:]
  for p in leftovers:
    assert not p.exists() and f"removed {p}" in run.out, run.out
  assert sorted(os.listdir(version.parent)) == ["1.0.0"] and snapshot(version) == built
  # Killed during --overwrite before the new version was complete: the old one is put back.
  (moved,) = [
    p for p in hostile.killed_build_leftovers(version, replaced=True) if ".replaced-" in p.name
  ]
  import shutil

  shutil.rmtree(version)
  run = cli("clef_jax.build", *args)
  assert run.code == 0 and f"restored {version}" in run.out, run.out + run.err[-2000:]
  assert snapshot(version) == built and sorted(os.listdir(version.parent)) == ["1.0.0"]
  # A second build while one holds the lock: refused at once, nothing touched.
  fd = os.open(version.parent, os.O_RDONLY)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    refused(cli("clef_jax.build", *args, "--overwrite", timeout=60), "another build", code=1)
  finally:
    os.close(fd)
  assert snapshot(version) == built


# ------------------------------------------------------------------------------------------------
# plan.
# ------------------------------------------------------------------------------------------------
def test_plan_bad_config_batch_and_json_path(tmp_path):
  refused(cli("clef_jax.plan", "--config=configs/small.py:tiny,stpes=2"), "stpes", code=2)
  refused(cli("clef_jax.plan", "--config=configs/smal.py"), "configs/smal.py", code=2)
  refused(cli("clef_jax.plan", "--config=configs/small.py:tiny", "--batch=0"), "--batch", code=2)
  blocker = tmp_path / "f"
  blocker.write_text("mine")
  refused(
    cli("clef_jax.plan", "--config=configs/small.py:tiny", f"--json={blocker / 'p.json'}"),
    f"{blocker} is a file",
    code=2,
  )
  refused(
    cli("clef_jax.plan", "--config=configs/small.py:tiny", f"--json={blocker}"),
    "--overwrite",
    code=2,
  )  # before the compile, not after it
  assert blocker.read_text() == "mine"
