"""Test set-up: 8 simulated CPU devices, absl flags parsed, shared real records."""

import os

# Must be set before jax is imported anywhere.
os.environ["XLA_FLAGS"] = (
  os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pathlib  # noqa: E402

import pytest  # noqa: E402
from absl import flags  # noqa: E402

# grain worker processes (and absl.app-based code) need parsed flags.
flags.FLAGS.mark_as_parsed()

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
  """Path of `../shared/data` (real PhysioNet records).

  Skips when absent (a user's clone has no shared/); under CI (`CI=true`) absence fails.
  """
  if not SHARED_DATA.is_dir():
    if os.environ.get("CI", "").lower() == "true":
      pytest.fail(f"CI=true but the shared real records are missing at {SHARED_DATA}")
    pytest.skip(f"shared real records not found at {SHARED_DATA}")
  return SHARED_DATA


def _most_optimizations_disabled():
  """`jax_disable_most_optimizations` while the generator is suspended: XLA:CPU compile time
  dominates these small graphs' run time, and the numerics are unaffected."""
  import jax

  prev = jax.config.values["jax_disable_most_optimizations"]
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", prev)


@pytest.fixture
def fast_compiles():
  """Fast compiles for one test."""
  yield from _most_optimizations_disabled()


@pytest.fixture(scope="module")
def fast_compiles_module():
  """Fast compiles for a whole module: `pytestmark = pytest.mark.usefixtures(...)`, or a
  module-scoped fixture's argument."""
  yield from _most_optimizations_disabled()
