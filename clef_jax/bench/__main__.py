"""`python -m clef_jax.bench <model|loss|input|device> [flags]`: dispatch to one benchmark."""

import importlib
import sys

BENCHMARKS = ("model", "loss", "input", "device")


def main() -> None:
  if len(sys.argv) < 2 or sys.argv[1] not in BENCHMARKS:
    print(f"usage: python -m clef_jax.bench {{{','.join(BENCHMARKS)}}} [flags]  (--help per benchmark)")
    sys.exit(2)
  name = sys.argv.pop(1)
  sys.argv[0] = f"clef_jax.bench {name}"
  importlib.import_module(f"clef_jax.bench.{name}").run()


if __name__ == "__main__":
  main()
