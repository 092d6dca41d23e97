r"""Pretraining entry point: parses flags, sets up processes, calls `train_and_evaluate`.

    python -m clef_jax.main --config=configs/small.py:demo --workdir=/tmp/clef_demo
    python -m clef_jax.main --config=configs/medium.py --workdir=gs://.../run1 \
        --config.input.data_dir=/data/tfds

Multi-process (one process per host, or per GPU): JAX's auto-detection covers TPU pods, SLURM and
Open MPI (`--distributed=auto`, the default, initialises when one of those, or
`JAX_COORDINATOR_ADDRESS`, says there are several processes); elsewhere pass
`--coordinator_address=host:port --num_processes=N --process_id=i` to every process.

Exit status: 0 done; 1 misconfiguration or non-finite loss (one line on stderr, no traceback);
143 (128 + SIGTERM) or 130 (128 + SIGINT, Ctrl-C) after the signal was caught and a checkpoint
saved: rerun to resume. A second trainer on a workdir in use is refused (exit 1).
"""

import os

# Host-side numpy work (pipeline filters, the probe) is many small ops running next to XLA's own
# thread pool; OpenBLAS's pool on top oversubscribes the cores (the probe ran 10x slower on 2
# cores). Must be set before numpy is first imported.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import signal  # noqa: E402
import sys  # noqa: E402

from absl import (
  app,  # noqa: E402
  flags,  # noqa: E402
  logging,  # noqa: E402
)
from ml_collections import config_flags  # noqa: E402

from clef_jax import cli  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
  "config",
  None,
  "Config file, e.g. configs/small.py:demo (options after the colon).",
  lock_config=True,
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (checkpoints, metrics, export).")
_DISTRIBUTED = flags.DEFINE_enum(
  "distributed",
  "auto",
  ["auto", "on", "off"],
  "jax.distributed.initialize: auto = when --coordinator_address / JAX_COORDINATOR_ADDRESS or "
  "a multi-process cluster (SLURM, Open MPI, multi-host TPU) is detected.",
)
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")
_CACHE = flags.DEFINE_string(
  "compilation_cache",
  "{workdir}/jax_cache",
  "Persistent XLA compilation cache ('' disables): a restarted run skips recompiling.",
)
flags.mark_flags_as_required(["config", "workdir"])


def _cluster_processes() -> int:
  """Processes a scheduler launched, from its environment (1 when none is detected)."""
  for var in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "JAX_NUM_PROCESSES"):
    if os.environ.get(var, "").isdigit():
      return int(os.environ[var])
  hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
  return len(hosts.split(",")) if hosts else 1


def _init_distributed() -> None:
  """`jax.distributed.initialize` when flags or the environment ask for several processes."""
  import jax

  explicit = _COORDINATOR.value or os.environ.get("JAX_COORDINATOR_ADDRESS")
  if _DISTRIBUTED.value == "off" or (
    _DISTRIBUTED.value == "auto" and not explicit and _cluster_processes() <= 1
  ):
    return
  # CPU-only multi-process runs (tests, CPU clusters) need cross-process collectives.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(
    coordinator_address=_COORDINATOR.value,
    num_processes=_NUM_PROCESSES.value,
    process_id=_PROCESS_ID.value,
  )


def _parse_flags(argv):
  """absl flag parsing: `--help` exits 0, every failure is one `error:` line and status 1."""
  return cli.absl_parse(argv, doc=__doc__)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  workdir = os.path.expanduser(_WORKDIR.value)
  try:
    cli.check_output_dir(workdir, "--workdir")
  except cli.UsageError as e:
    print(f"error: {e}", file=sys.stderr, flush=True)
    sys.exit(1)
  try:
    config = _CONFIG.value
    config.get("seed")  # A config file that failed to load raises only when first used.
  except OSError as e:  # config_flags reports an unreadable config file lazily, here.
    print(f"error: {cli.config_file_error(e)}", file=sys.stderr, flush=True)
    sys.exit(1)
  # Before anything else runs: this may replace the process with the same command, the caching
  # host allocator preloaded (`clef_jax.allocator`).
  cli.start_host_allocator(config.get("host_allocator", "system"), "--config.host_allocator")
  import jax  # After flag parsing: `--help` stays fast.

  _init_distributed()
  if _CACHE.value:
    jax.config.update("jax_compilation_cache_dir", _CACHE.value.format(workdir=workdir))
  # Per-process absl logs from the libraries (orbax, grain) stay quiet on the console unless
  # asked for; the trainer prints its own lines from process 0.
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)

  from clef_jax import train_loop  # pylint: disable=g-import-not-at-top

  try:
    train_loop.train_and_evaluate(config, workdir)
  except (train_loop.ConfigError, train_loop.TrainingError) as e:
    print(f"error: {e}", file=sys.stderr, flush=True)
    sys.exit(1)
  except train_loop.Preempted as e:
    print(str(e), file=sys.stderr, flush=True)
    sys.exit(128 + e.signum)


if __name__ == "__main__":
  try:
    app.run(main, flags_parser=_parse_flags)
  except KeyboardInterrupt:
    # Ctrl-C before the loop (data, compilation, restore) or a second one during the save.
    print(
      "Interrupted (SIGINT): stopped without saving; the last saved checkpoint, if any, is "
      "kept: rerun the same command to resume from it.",
      file=sys.stderr,
      flush=True,
    )
    sys.exit(128 + signal.SIGINT)
