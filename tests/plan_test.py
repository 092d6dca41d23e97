"""`python -m clef_jax.plan`: the ahead-of-time compile report of the trainer's step.

The TPU-topology tests need libtpu (`pip install '.[tpu]'`). libtpu holds a process-wide lock
while it is loaded, so every libtpu compile here runs in ONE child process per test session
worker, under a file lock shared by all workers (pytest-xdist), and the child exits (releasing
libtpu) before the next one may start.
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import pathlib
import subprocess
import sys
import tempfile

import pytest

from clef_jax import plan
from clef_jax.models import net1d

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
TOPOLOGY = "v5p:2x2x1"
CHIPS = 4
WINDOW = 512
GLOBAL_BATCH = 16  # Pairs; 4 per chip.
# Channels are multiples of the TPU's 128-lane tile, so the chip's padded layout adds little
# to the arguments' bytes.
VARIANT = dict(
  base_filters=128,
  ratio=1.0,
  filter_list=(128, 256),
  m_blocks_list=(1, 1),
  groups_width=128,
  kernel_size=16,
)
FSDP_MIN_SIZE = 4096

_CHILD = r"""
import json, sys
from clef_jax import plan
out = {}
for strategy in ("replicate", "fsdp"):
  cfg = plan.load_config(CONFIG)
  cfg.input.window = WINDOW
  cfg.mesh.strategy = strategy
  cfg.mesh.fsdp_min_size = FSDP_MIN_SIZE
  out[strategy] = plan.plan(cfg, topology=TOPOLOGY, batch=GLOBAL_BATCH, fit=False)
json.dump(out, sys.stdout)
"""


def _libtpu_or_skip():
  if importlib.util.find_spec("libtpu") is None:
    if os.environ.get("CI", "").lower() == "true":
      pytest.fail("CI=true but libtpu is not installed (.ci/run installs the tpu extra)")
    pytest.skip("libtpu not installed: pip install '.[tpu]' to run the TPU-topology plan tests")


def libtpu_env() -> dict[str, str]:
  """The environment of a deviceless libtpu compile on a CPU host."""
  env = dict(
    os.environ,
    JAX_PLATFORMS="cpu",
    TPU_ACCELERATOR_TYPE="v5litepod-4",
    TPU_SKIP_MDS_QUERY="1",
    TPU_WORKER_HOSTNAMES="localhost",
  )
  env.pop("XLA_FLAGS", None)
  return env


def run_libtpu(args: list[str], timeout: float = 900) -> subprocess.CompletedProcess:
  """Runs `python args...` from the repository root, one libtpu process at a time."""
  lock = pathlib.Path(tempfile.gettempdir()) / "clef_jax_plan_test_libtpu.lock"
  with open(lock, "a") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      return subprocess.run(
        [sys.executable, *args],
        cwd=REPO_ROOT,
        env=libtpu_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
      )
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def variant_config(tmp_path: pathlib.Path, base: str) -> str:
  """A config file: `base` (e.g. "small.py:tiny") with the model replaced by VARIANT, the
  two-block Net1D, so every test here compiles a program a fraction of small's size."""
  path = tmp_path / "variant.py"
  file, _, arg = base.partition(":")
  path.write_text(
    "from clef_jax import configs\n"
    "from clef_jax.models import net1d\n\n\n"
    "def get_config(arg=None):\n"
    f"  cfg = configs.load({str(REPO_ROOT / 'configs' / file)!r} + (':' + arg if arg else ''))\n"
    "  del cfg.model['size']\n"
    f"  cfg.model.size = net1d.Net1DVariant(**{VARIANT!r})\n"
    "  return cfg\n"
  )
  return f"{path}:{arg}"


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
  """The plan of the small variant on 4 v5p chips, replicated and fsdp, from one child."""
  _libtpu_or_skip()
  code = (
    f"CONFIG = {variant_config(tmp_path_factory.mktemp('plan'), 'small.py:bf16')!r}\n"
    f"WINDOW = {WINDOW}\nTOPOLOGY = {TOPOLOGY!r}\n"
    f"GLOBAL_BATCH = {GLOBAL_BATCH}\nFSDP_MIN_SIZE = {FSDP_MIN_SIZE}\n" + _CHILD
  )
  proc = run_libtpu(["-c", code])
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout)


def conv_macs(variant: net1d.Net1DVariant, window: int) -> tuple[int, int]:
  """Multiply-accumulates of one signal's forward pass, from the layer shapes alone:
  `(all layers, the stem conv)`. A conv with SAME padding and stride s has ceil(L / s) outputs,
  each `kernel * in_ch / groups` MACs per output channel."""
  k, length = variant.kernel_size, window
  length = -(-length // 2)
  stem = length * variant.base_filters * 1 * k
  total, in_ch = stem, variant.base_filters
  for out_ch, m_blocks in zip(variant.filter_list, variant.m_blocks_list):
    for b in range(m_blocks):
      block_in = in_ch if b == 0 else out_ch
      mid = int(out_ch * variant.ratio)
      groups = out_ch // variant.groups_width
      total += length * block_in * mid  # conv1, 1x1, before the stride.
      if b == 0:
        length = -(-length // 2)
      total += length * mid * (mid // groups) * k  # conv2, grouped, strided.
      total += length * mid * out_ch  # conv3, 1x1.
      total += out_ch * (out_ch // 2) * 2  # SE: two dense layers on the mean.
    in_ch = out_ch
  return total, stem


def test_flops_match_closed_form(reports):
  v = net1d.Net1DVariant(**VARIANT)
  total, stem = conv_macs(v, WINDOW)
  signals = 2 * GLOBAL_BATCH // CHIPS
  # Training = forward + weight gradients + input gradients (none for the stem: the input is
  # data), 2 flops per MAC.
  expected = 2 * signals * (3 * total - stem)
  for strategy, r in reports.items():
    assert r["cost"]["flops"] == pytest.approx(expected, rel=0.05), strategy


def test_replicated_arguments_are_the_whole_state(reports):
  r = reports["replicate"]
  assert r["state_bytes_per_chip"] == r["state_bytes"]
  batch = (GLOBAL_BATCH // CHIPS) * (2 * WINDOW + 2) * 4
  # The chip's tiled layout pads the small arrays (biases, scalars): a few per cent.
  assert r["memory"]["argument"] >= r["state_bytes"] + batch
  assert r["memory"]["argument"] == pytest.approx(r["state_bytes"] + batch, rel=0.05)


def test_fsdp_arguments_are_a_shard_of_the_state(reports):
  rep, r = reports["replicate"], reports["fsdp"]
  assert r["state_bytes"] == rep["state_bytes"]
  assert r["state_bytes_per_chip"] == pytest.approx(r["state_bytes"] / CHIPS, rel=0.05)
  assert r["memory"]["argument"] == pytest.approx(r["state_bytes"] / CHIPS, rel=0.10)
  assert r["collectives"]["all-gather"]["count"] > rep["collectives"]["all-gather"]["count"]


def test_report_fields(reports):
  for strategy, r in reports.items():
    assert r["platform"] == "tpu" and r["chips"] == CHIPS and r["config"]["strategy"] == strategy
    assert r["config"]["conv_impl"] == "tpu"  # "auto" compiles the target's formulation.
    assert r["fits"] is True and r["chip"]["name"] == "v5p"
    assert r["compile_seconds"] > 0 and r["cost"]["bytes"] > 0
    f = r["roofline"]
    assert f["step_s"] == max(f["compute_s"], f["hbm_s"], f["ici_s"]) > 0
    assert 0 < f["mfu_ceiling"] <= 1
    assert f["signals_per_s_per_chip"] == pytest.approx(r["signals_per_chip"] / f["step_s"])
    # The HLO's HBM traffic: at least one read of every argument (state and batch), no more
    # than all the traffic, and some of it on chip (VMEM prefetches).
    t = r["traffic"]
    assert r["memory"]["argument"] <= t["hbm"] < t["total"] and t["on_chip"] > 0
    assert t["total"] == pytest.approx(t["hbm"] + t["on_chip"] + t["host"])
    assert f["hbm_traffic_s"] == pytest.approx(t["hbm"] / r["chip"]["hbm_bandwidth"])
    assert f["traffic_step_s"] == max(f["compute_s"], f["hbm_traffic_s"], f["ici_s"])
    assert f["traffic_mfu_ceiling"] == pytest.approx(f["compute_s"] / f["traffic_step_s"])
    assert "all-reduce" in r["collectives"]  # Gradients are averaged over the chips.


@pytest.mark.slow
def test_cli_topology_prints_fit_and_writes_json(tmp_path):
  _libtpu_or_skip()
  out = tmp_path / "plan.json"
  proc = run_libtpu(
    [
      "-m",
      "clef_jax.plan",
      f"--config={variant_config(tmp_path, 'small.py:tiny')}",
      f"--topology={TOPOLOGY}",
      "--batch=8",
      f"--json={out}",
    ]
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "FITS" in proc.stdout and "largest per-chip batch that fits" in proc.stdout
  r = json.loads(out.read_text())
  assert r["config"]["size"] == repr(net1d.Net1DVariant(**VARIANT))  # The file's model.
  fit = r["max_per_chip_batch"]
  assert fit["per_chip_batch"] > r["per_chip_batch"] and fit["bytes_per_pair"] > 0
  largest = fit["fixed_bytes"] + fit["bytes_per_pair"] * fit["per_chip_batch"]
  assert largest <= r["chip"]["hbm_bytes"]


# ------------------------------------------------------------------------------------------------
# Without libtpu.
# ------------------------------------------------------------------------------------------------
@pytest.fixture
def plan_env(monkeypatch):
  """`plan.main` sets the deviceless-compile variables; restore them after the test."""
  for k, v in libtpu_env().items():
    if k.startswith("TPU_") or k == "JAX_PLATFORMS":
      monkeypatch.setenv(k, v)


def test_local_topology(capsys, tmp_path):
  out = tmp_path / "plan.json"
  rc = plan.main(
    [
      f"--config={variant_config(tmp_path, 'small.py:tiny')}",
      "--topology=local",
      "--batch=8",
      "--no_fit",
      f"--json={out}",
    ]
  )
  assert rc == 0
  text = capsys.readouterr().out
  assert "XLA / chip" in text and "roofline" not in text
  r = json.loads(out.read_text())
  assert r["platform"] == "cpu" and r["global_batch"] == 8 and r["cost"]["flops"] > 0
  assert r["config"]["conv_impl"] == "cpu" and ", conv cpu, window" in text
  assert r["per_chip_batch"] == 8 // r["chips"]
  # XLA:CPU has one memory space: all the traffic is main memory's.
  t = r["traffic"]
  assert t["hbm"] == t["total"] >= r["memory"]["argument"] > 0 and t["on_chip"] == 0
  assert "HLO traffic / chip" in text


def test_missing_libtpu_is_one_line(monkeypatch, capsys, plan_env):
  real = importlib.util.find_spec
  monkeypatch.setattr(
    importlib.util, "find_spec", lambda name, *a: None if name == "libtpu" else real(name, *a)
  )
  rc = plan.main(["--config=configs/small.py:tiny", f"--topology={TOPOLOGY}"])
  err = capsys.readouterr().err
  assert rc == 2
  assert err.count("\n") == 1 and "pip install '.[tpu]'" in err


@pytest.mark.parametrize(
  "argv, needle",
  [
    (["--config=configs/nope.py"], "no such file: configs/nope.py"),
    (["--config=configs/small.py:tiny", "--topology=v9z:2x2"], "unknown TPU generation"),
    (["--config=configs/small.py:tiny", "--batch=0"], "--batch must be positive"),
    (["--config=configs/small.py:tiny", "--topology=local", "--batch=7"], "not divisible"),
  ],
)
def test_bad_input_is_one_line(argv, needle, capsys, plan_env):
  try:
    rc = plan.main(argv)
  except SystemExit as e:  # argparse's own checks.
    rc = e.code
  assert rc == 2
  err = capsys.readouterr().err
  assert needle in err and err.count("\n") == 1, err
