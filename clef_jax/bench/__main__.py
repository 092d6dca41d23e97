"""`python -m clef_jax.bench <model|loss|input|device> [flags]`: dispatch to one benchmark."""

import importlib
import sys

BENCHMARKS = ("model", "loss", "input", "device")
USAGE = (
  f"usage: python -m clef_jax.bench {{{','.join(BENCHMARKS)}}} [flags]  (--help per benchmark)"
)


def main() -> None:
  from clef_jax import cli

  if len(sys.argv) < 2 or sys.argv[1] not in BENCHMARKS:
    if cli.wants_help(sys.argv[1:2]):
      print(USAGE)
      sys.exit(0)
    given = f"unknown benchmark {sys.argv[1]!r}; " if len(sys.argv) > 1 else ""
    print(f"error: {given}{USAGE[len('usage: ') :]}", file=sys.stderr)
    sys.exit(2)
  name = sys.argv.pop(1)
  sys.argv[0] = f"clef_jax.bench {name}"
  importlib.import_module(f"clef_jax.bench.{name}").run()


if __name__ == "__main__":
  main()
