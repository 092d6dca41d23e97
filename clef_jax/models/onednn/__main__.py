"""Builds and checks the oneDNN convolution kernels ahead of their first use.

    python -m clef_jax.models.onednn

compiles `conv1d.cc` against the installed oneDNN into the cache (`~/.cache/clef_jax/onednn`,
or `$XDG_CACHE_HOME/clef_jax/onednn`; a cached build is reused), loads it and checks one small
convolution. It prints the library's path and oneDNN's version and exits 0, or prints one line
saying why `conv_impl="onednn"` is unavailable (and so runs "cpu") and exits 1.
"""

from __future__ import annotations

import argparse
import sys

from clef_jax.models import onednn


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(
    prog="python -m clef_jax.models.onednn",
    description="Build (cached) and check the oneDNN convolution kernels of conv_impl='onednn'.",
  )
  p.parse_args(argv)
  # `available()` is the build: once per source/jaxlib/oneDNN, then the cached library is loaded.
  if onednn.available():
    print(f"oneDNN kernels ready: {onednn.library_path()}")
    print(f"oneDNN {onednn.version()}")
    return 0
  print(
    f"oneDNN kernels unavailable, conv_impl='onednn' runs 'cpu': {onednn.reason()}", file=sys.stderr
  )
  return 1


if __name__ == "__main__":
  sys.exit(main())
