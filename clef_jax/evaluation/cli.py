r"""`python -m clef_jax.evaluate`: downstream evaluation of trained backbones, with a report.

    python -m clef_jax.evaluate --config=configs/eval.py:sex+age,wfdb=../shared/data/cinc2021 \
        --model_workdir=/tmp/clef_small_demo --output=/tmp/eval_cinc
    python -m clef_jax.evaluate --config=configs/eval.py:ptbxl,finetune,data_dir=~/tfds \
        --model_workdir=W --compare=W2 --torch_weights=clef_m=clef_medium.ckpt@medium --output=OUT

Models: `--model_workdir` (a training run directory, its latest checkpoint, or a checkpoint /
step directory), every `--torch_weights` file (a PyTorch Net1D file: CLEF `.ckpt`, state_dict,
safetensors, whose size is `@SIZE` or a size named in the file name) and every `--compare` entry
(either kind). Entries are written `[LABEL=]PATH[@SIZE]`. A random-init backbone of the first
model's architecture ("random init") is always evaluated too. `--workdir` is a deprecated alias of
`--model_workdir` (in training, `--workdir` is the run directory being written).

Outputs in `--output`: `report.md` (also printed), `report.json`, `report.png`, and
`predictions.npz` (test targets and scores of every model, to recompute any number). They are
written once complete (staged, then renamed); a report already there is kept unless
`--overwrite`.

`python -m clef_jax.evaluate --list_tasks` prints every registered task, one per line: name,
group, dataset, kind, metric (tab-separated); `configs/eval.py:paper` selects the paper's 18.

Exit status: 0 done (also for `--help`); 1 bad config, output, data or weights (one line on
stderr); 130 interrupted (Ctrl-C), nothing written.
"""

from __future__ import annotations

import sys

LIST_FLAG = "--list_tasks"
# Old flag -> its name now (kept for one release; a note on stderr when used).
DEPRECATED = {"workdir": "model_workdir"}


def model_entries(
  model_workdir: str | None, torch_weights: list[str], compare: list[str]
) -> tuple[str | None, list[str]]:
  """The CLI's model flags -> `(main model entry or None, further entries)`, in flag order."""
  entries = ([model_workdir] if model_workdir else []) + list(torch_weights) + list(compare)
  return (entries[0] if entries else None), entries[1:]


def main(argv: list[str] | None = None) -> None:
  """Parses the flags, runs `protocol.run`, exits 1 with one line on a usage error."""
  from absl import app, flags
  from absl import logging as absl_logging
  from ml_collections import config_flags

  from clef_jax import cli
  from clef_jax.evaluation import report as report_lib

  config_flag = config_flags.DEFINE_config_file(
    "config",
    None,
    "configs/eval.py:TASKS[,OPTIONS], e.g. configs/eval.py:sex+age,wfdb=DIR.",
    lock_config=True,
  )
  model_flag = flags.DEFINE_string(
    "model_workdir",
    None,
    "Model to evaluate: a training run directory (its latest "
    "checkpoint) or a checkpoint / step directory, optionally [LABEL=]PATH.",
  )
  torch_flag = flags.DEFINE_multi_string(
    "torch_weights",
    [],
    "PyTorch Net1D weight files, [LABEL=]PATH[@SIZE] (CLEF .ckpt, "
    "state_dict, safetensors; size from @SIZE or the file name).",
  )
  compare_flag = flags.DEFINE_multi_string(
    "compare",
    [],
    "More models, [LABEL=]PATH[@SIZE]: run / checkpoint directories or PyTorch weight files.",
  )
  output_flag = flags.DEFINE_string("output", None, "Report directory.")
  overwrite_flag = flags.DEFINE_boolean(
    "overwrite", False, "Replace a report already in --output (kept otherwise)."
  )
  flags.DEFINE_boolean(
    "list_tasks",
    False,
    "Print every task (name, group, dataset, kind, metric), one per line, and exit.",
  )
  flags.mark_flags_as_required(["config", "output"])
  command_line = argv is None  # Only the command line itself is re-executed (host allocator).
  argv = list(sys.argv if argv is None else argv)

  def parse(args):
    if LIST_FLAG in args[1:]:
      from clef_jax.evaluation import tasks

      print("\n".join(tasks.list_tasks()), flush=True)
      sys.exit(0)
    return cli.absl_parse(args, doc=__doc__, renamed=DEPRECATED)

  def run(args):
    if len(args) > 1:
      raise app.UsageError(f"Unexpected arguments: {' '.join(args[1:])}")
    absl_logging.set_verbosity(absl_logging.ERROR)  # Orbax/TFDS notes off the console.
    main_model, others = model_entries(model_flag.value, torch_flag.value, compare_flag.value)
    try:  # Before any model is loaded: the report must have somewhere to go.
      output = cli.check_output_dir(output_flag.value, "--output")
      taken = [n for n in report_lib.REPORT_FILES if (output / n).exists()]
      if taken and not overwrite_flag.value:
        raise cli.UsageError(
          f"--output {output}: already holds {', '.join(taken)}; pass "
          "--overwrite to replace that report, or choose another --output."
        )
    except cli.UsageError as e:
      print(f"error: {e}", file=sys.stderr, flush=True)
      sys.exit(1)
    try:
      config = config_flag.value
      config.get("mode")  # A config file that failed to load raises when first used.
    except OSError as e:
      print(f"error: {cli.config_file_error(e)}", file=sys.stderr, flush=True)
      sys.exit(1)
    # Before any model is loaded: this may replace the process with the same command, the
    # caching host allocator preloaded.
    cli.start_host_allocator(
      config.get("host_allocator", "system"), "--config.host_allocator", reexec=command_line
    )
    from clef_jax.evaluation import protocol  # After the re-exec: jax is imported here.

    try:
      protocol.run(config, model=main_model, compare=others, output=output_flag.value)
    except (OSError, ValueError, KeyError) as e:
      print(f"error: {cli.error_text(e)}", file=sys.stderr, flush=True)
      sys.exit(1)
    except KeyboardInterrupt:
      print(
        "error: interrupted; no report written (an earlier one in --output is kept).",
        file=sys.stderr,
        flush=True,
      )
      sys.exit(130)

  app.run(run, argv=argv, flags_parser=parse)
