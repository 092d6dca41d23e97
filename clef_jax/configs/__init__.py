"""The training and evaluation configs (`small`, `medium`, `large`, `eval`; shared `base`).

They are installed with the package. In a checkout, `configs/` at the repository root is a link
to this folder, so `--config=configs/small.py:demo` names these files; elsewhere (an installed
package, another working directory) the CLIs read `--config=configs/NAME.py` as the packaged
`NAME.py` when no such file exists there. `python -m clef_jax.configs` prints this folder.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Sequence

DIR = pathlib.Path(__file__).resolve().parent


def resolve(spec: str) -> str:
  """`configs/NAME.py[:OPTIONS]` -> this folder's `NAME.py[:OPTIONS]` when the path is absent.

  Any other spec, and one whose file exists, is returned unchanged (a user's own config file
  always wins).
  """
  path, sep, options = spec.partition(":")
  parts = pathlib.PurePath(path).parts
  if (
    len(parts) == 2
    and parts[0] == "configs"
    and not os.path.exists(path)
    and (DIR / parts[1]).is_file()
  ):
    return f"{DIR / parts[1]}{sep}{options}"
  return spec


def load(spec: str):
  """`path/to/config.py[:OPTIONS]` -> that file's `get_config(OPTIONS)` (as `config_flags` reads it).

  The path goes through `resolve` first. A missing file raises `FileNotFoundError` with the path as
  its `filename`; a config's own refusal of its options (`ValueError`) propagates.
  """
  import importlib.util

  path, _, arg = resolve(spec).partition(":")
  p = pathlib.Path(path)
  if not p.is_file():
    raise FileNotFoundError(2, "No config file", path)
  module_spec = importlib.util.spec_from_file_location(f"_config_{p.stem}", p)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg or None)


def resolve_argv(argv: Sequence[str], flag: str = "config") -> list[str]:
  """`argv` with the value of `--flag=SPEC` / `--flag SPEC` passed through `resolve`."""
  out = list(argv)
  for i, arg in enumerate(out):
    if arg.startswith(f"--{flag}="):
      out[i] = f"--{flag}={resolve(arg.split('=', 1)[1])}"
    elif arg == f"--{flag}" and i + 1 < len(out):
      out[i + 1] = resolve(out[i + 1])
  return out
