r"""Backbone weights between a training workdir (Orbax) and PyTorch files.

    python -m clef_jax.export --workdir W --output clef_small.ckpt [--format lightning] [--overwrite]
    python -m clef_jax.export --from_torch clef_small.ckpt --config configs/small.py --workdir W

Forward: the latest checkpoint of `W` -> a PyTorch file. `lightning` (default) is what the
official CLEF code and the released `clef_{small,medium,large}.ckpt` use
(`{"state_dict": {"backbone.<key>": tensor}}`); `state_dict` is the bare Net1D state dict;
`safetensors` the same without pickle.

Reverse: a PyTorch file (a released CLEF checkpoint, or one of the above) -> `W/checkpoints/0`,
a step-0 train state of `--config` whose backbone holds those weights (fresh optimiser, no data
position). Use it as `--config.init_from=W` of another run, with `python -m clef_jax.embed
--workdir W`, or continue pretraining from it with `python -m clef_jax.main --config ...
--workdir W` (same config).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
from collections.abc import Sequence


def load_config(spec: str):
  """`path/to/config.py[:options]` -> its `get_config(options)` (as `config_flags` does)."""
  from clef_jax import configs

  try:
    return configs.load(spec)
  except FileNotFoundError as e:
    raise FileNotFoundError(f"No config file {e.filename}.") from None


def to_torch(workdir: str, output: str, fmt: str) -> str:
  """Latest checkpoint of `workdir` -> PyTorch file `output`; returns a summary line."""
  from clef_jax import weights

  loaded = weights.load_backbone(workdir)
  out = pathlib.Path(output)
  out.parent.mkdir(parents=True, exist_ok=True)
  weights.save_backbone(loaded.params, out, backbone=loaded.backbone, size=loaded.size, format=fmt)
  return f"{loaded.source} ({loaded.backbone}-{loaded.size}) -> {out} ({fmt})"


def from_torch(torch_file: str, config_spec: str, workdir: str) -> str:
  """PyTorch file -> `workdir/checkpoints/0` for `config_spec`; returns a summary line."""
  import jax

  from clef_jax import checkpoint, models, train, train_loop, weights

  config = load_config(config_spec)
  directory = pathlib.Path(workdir).expanduser().absolute() / "checkpoints"
  if directory.is_dir() and any(p.name.isdigit() for p in directory.iterdir()):
    raise ValueError(f"{directory} already holds checkpoints; choose a new --workdir.")
  params = weights.load_backbone(
    torch_file, backbone=config.model.name, size=config.model.size
  ).params
  model = models.from_config(config.model)
  tx, _ = train_loop.create_optimizer(config.optim, steps_per_epoch=1)  # Shapes only.
  state = jax.jit(
    lambda rng, p: train.create_train_state(
      rng, backbone_params=p, **train_loop.state_kwargs(config, model, tx)
    )
  )(jax.random.key(config.seed), params)
  ckpt = checkpoint.Checkpointer(directory, async_save=False)
  ckpt.save(0, state, config=json.loads(config.to_json()), force=True)
  ckpt.close()
  return (
    f"{torch_file} -> {directory / '0'} ({config.model.name}-{config.model.size}, "
    f"method {config.method}); use --config.init_from={workdir}"
  )


def main(argv: Sequence[str] | None = None) -> int:
  from clef_jax import cli
  from clef_jax.export.torch_files import FORMATS

  parser = cli.ArgumentParser(
    prog="python -m clef_jax.export",
    description=__doc__.split("\n\n")[0],
    formatter_class=argparse.RawDescriptionHelpFormatter,
    epilog=__doc__.split("\n\n", 1)[1],
  )
  parser.add_argument(
    "--workdir", required=True, help="training workdir (read, or written with --from_torch)"
  )
  parser.add_argument(
    "--output", help="PyTorch file to write (an existing one is kept unless --overwrite)"
  )
  parser.add_argument("--overwrite", action="store_true", help="replace an existing --output")
  parser.add_argument("--format", default="lightning", choices=FORMATS)
  parser.add_argument("--from_torch", help="PyTorch file to import")
  parser.add_argument("--config", help="config of the import, e.g. configs/small.py")
  args = parser.parse_args(argv)
  if bool(args.output) == bool(args.from_torch):
    parser.error("give either --output (export) or --from_torch with --config (import)")
  if args.from_torch and not args.config:
    parser.error("--from_torch needs --config")
  try:  # Before any weights are read: where the result goes must be writable and not taken.
    if args.output:
      cli.check_output_file(args.output, "--output", overwrite=args.overwrite)
    else:
      cli.check_output_dir(args.workdir, "--workdir")
  except cli.UsageError as e:
    parser.error(str(e))
  from absl import logging as absl_logging  # Orbax/TFDS chatter (read-only notes) off the console.

  absl_logging.set_verbosity(absl_logging.ERROR)
  source = args.workdir if args.output else args.from_torch
  try:
    if args.output:
      line = to_torch(args.workdir, args.output, args.format)
    else:
      line = from_torch(args.from_torch, args.config, args.workdir)
  except (FileNotFoundError, ValueError, KeyError, ImportError) as e:
    print(f"error: {cli.error_text(e)}", file=sys.stderr)
    return 1
  except KeyboardInterrupt:
    print("error: interrupted; nothing was written.", file=sys.stderr)
    return 130
  except OSError as e:
    print(
      f"error: {e.filename or source}: {e.strerror or e}; nothing was written.", file=sys.stderr
    )
    return 1
  except Exception as e:  # Torch, Orbax and safetensors readers fail in many ways.
    print(
      f"error: cannot convert {source} ({type(e).__name__}: {cli.error_text(e)}).", file=sys.stderr
    )
    return 1
  print(line)
  return 0


if __name__ == "__main__":
  sys.exit(main())
