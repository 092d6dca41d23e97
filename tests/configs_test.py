"""The packaged configs and builders: `configs/NAME.py` and `python -m clef_jax.build` work from
any directory, and a user's own file always wins."""

from __future__ import annotations

import importlib.util
import os
import pathlib
import subprocess
import sys

from clef_jax import build, configs
from clef_jax.export import __main__ as export_main

REPO = pathlib.Path(__file__).resolve().parents[1]
PACKAGED = REPO / "clef_jax" / "configs"
ENV = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))


def test_configs_name_the_packaged_file_outside_a_checkout(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert configs.DIR == PACKAGED
  assert configs.resolve("configs/small.py") == str(PACKAGED / "small.py")
  assert (
    configs.resolve("configs/medium.py:bf16,steps=3") == f"{PACKAGED / 'medium.py'}:bf16,steps=3"
  )
  # Anything else is left as written (config_flags then names the missing file).
  for spec in ("configs/no_such.py", "my/configs/small.py", "small.py", "/abs/configs/small.py"):
    assert configs.resolve(spec) == spec
  assert configs.resolve_argv(
    [
      "prog",
      "--config=configs/eval.py:demo",
      "--config",
      "configs/small.py",
      "--workdir=configs/small.py",
    ]
  ) == [
    "prog",
    f"--config={PACKAGED / 'eval.py'}:demo",
    "--config",
    str(PACKAGED / "small.py"),
    "--workdir=configs/small.py",
  ]


def test_a_users_own_configs_file_wins(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  (tmp_path / "configs").mkdir()
  (tmp_path / "configs" / "small.py").write_text(
    "from clef_jax.configs import small\n\n"
    "def get_config(arg=None):\n"
    "  config = small.get_config(arg)\n"
    "  config.total_steps = 12345\n"
    "  return config\n"
  )
  assert configs.resolve("configs/small.py:tiny") == "configs/small.py:tiny"
  assert export_main.load_config("configs/small.py:tiny").total_steps == 12345
  (tmp_path / "configs" / "small.py").unlink()
  packaged = export_main.load_config("configs/small.py:tiny")
  from clef_jax import plan
  from clef_jax.configs import small

  assert packaged.total_steps == small.get_config("tiny").total_steps != 12345
  assert plan.load_config("configs/small.py:tiny").total_steps == packaged.total_steps


def test_checkout_link_names_the_same_files():
  link = REPO / "configs"
  assert link.is_symlink() and link.resolve() == PACKAGED
  assert sorted(p.name for p in link.glob("*.py")) == sorted(p.name for p in PACKAGED.glob("*.py"))


def test_builders_are_found_inside_the_package():
  assert build.DATASETS_DIR == REPO / "clef_jax" / "datasets"
  names = build.available_datasets()
  assert {"synthetic_ecg", "ptbxl", "music_scd", "aurora_bp", "mimic_iv_lvef"} <= set(names)
  for name in names:
    module = build.dataset_module(name)
    assert module.__name__ == f"clef_jax.datasets.{name}.{name}_dataset_builder"
    assert module.Builder.name == name
  # No top-level `configs` or builder package shadows another distribution's (HuggingFace's
  # `datasets`): both live under the clef_jax namespace.
  spec = importlib.util.find_spec("configs")
  assert spec is None or pathlib.Path(spec.origin).resolve().parent == PACKAGED


def test_clis_read_packaged_configs_and_builders_from_another_directory(tmp_path):
  run = lambda *args: subprocess.run(
    [sys.executable, "-m", *args],
    cwd=tmp_path,
    env=ENV,
    capture_output=True,
    text=True,
    timeout=300,
  )
  out = run("clef_jax.configs")
  assert out.returncode == 0 and out.stdout.strip() == str(PACKAGED)
  out = run(
    "clef_jax.build", "synthetic_ecg", "--config", "tiny", "--data_dir", str(tmp_path / "tfds")
  )
  assert out.returncode == 0, out.stderr[-2000:]
  assert (tmp_path / "tfds" / "synthetic_ecg" / "tiny" / "1.0.0" / "build_report.json").is_file()
  # A config the package does not have is one line naming it.
  out = run("clef_jax.main", "--config=configs/no_such.py", f"--workdir={tmp_path / 'w'}")
  assert out.returncode == 1 and "Traceback" not in out.stderr
  assert "no_such.py" in out.stderr.strip().splitlines()[-1]
