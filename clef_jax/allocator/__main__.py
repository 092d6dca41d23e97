"""`python -m clef_jax.allocator`: builds the caching host allocator and says where it is."""

import sys

from clef_jax import allocator


def main() -> None:
  path = allocator.library()
  if path is None:
    print(f"error: {allocator.reason()}; runs use the system allocator", file=sys.stderr)
    sys.exit(1)
  print(path)


if __name__ == "__main__":
  main()
