"""Conventions shared by every command line of the package (build, main, export, evaluate, embed,
bench, plan).

- Flags are spelled in snake_case (`--batch_size`, `--torch_weights`, `--manual_dir`).
- Old spellings keep working for one release: a hyphenated spelling of a known flag
  (`--torch-weights`) and each CLI's renamed flags (`--from-torch`, `--batch`) are rewritten to
  today's name before parsing, with a one-line `note:` on stderr.
- `--help` (and `-h`, `--helpfull`) prints the help and exits 0.
- Bad input ends in one `error:` line on stderr naming the flag, field or file and what to do,
  with exit status 2 for bad arguments and 1 for unusable inputs; never a traceback.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import re
import sys
from collections.abc import Collection, Mapping, Sequence
from typing import TextIO

HELP_FLAGS = ("-h", "--help", "-help", "--helpshort", "--helpfull", "-?")


class UsageError(ValueError):
  """A command line that cannot be run as written; its message is one line naming the flag."""


def wants_help(argv: Sequence[str]) -> bool:
  """Whether `argv` (without the program name) asks for help before a `--` separator."""
  for arg in argv:
    if arg == "--":
      return False
    if arg.split("=", 1)[0] in HELP_FLAGS:
      return True
  return False


def rename_deprecated(
  argv: Sequence[str],
  known: Collection[str],
  renamed: Mapping[str, str] | None = None,
  *,
  stream: TextIO | None = None,
) -> list[str]:
  """`argv` with deprecated flag spellings replaced by today's names, one note per spelling.

  Args:
    argv: arguments without the program name.
    known: today's flag names, without dashes (`"batch_size"`).
    renamed: old name -> today's name for flags that were renamed (`{"batch": "batch_size"}`);
      an old name may be hyphenated (`"from-torch"`).
    stream: where the notes go (default stderr).

  Raises:
    UsageError: a renamed flag given together with its new name (which value would win is not
      obvious); hyphenated spellings of the same flag may repeat, as the flag itself may.
  """
  renamed = dict(renamed or {})
  stream = sys.stderr if stream is None else stream
  out, noted, used_new, used_old = [], set(), set(), {}
  for i, arg in enumerate(argv):
    if arg == "--":
      out.extend(argv[i:])
      break
    if not arg.startswith("--") or arg.startswith("---"):
      out.append(arg)
      continue
    name, sep, value = arg[2:].partition("=")
    new = renamed.get(name)
    if new is None and "-" in name and "." not in name and name.replace("-", "_") in known:
      new = name.replace("-", "_")
    if new is None:
      if name in known:
        used_new.add(name)
      out.append(arg)
      continue
    if name in renamed:
      used_old[new] = name
    if name not in noted:
      noted.add(name)
      print(f"note: --{name} is deprecated; use --{new}.", file=stream, flush=True)
    out.append(f"--{new}{sep}{value}")
  for new, old in used_old.items():
    if new in used_new:
      raise UsageError(f"--{old} and --{new} both given; use --{new} only.")
  return out


class ArgumentParser(argparse.ArgumentParser):
  """`argparse.ArgumentParser` that accepts the deprecated spellings (`rename_deprecated`).

  Args:
    renamed: old flag name -> today's name, for this CLI's renamed flags.
    **kwargs: as `argparse.ArgumentParser`.
  """

  def __init__(self, *args, renamed: Mapping[str, str] | None = None, **kwargs):
    super().__init__(*args, **kwargs)
    self.renamed = dict(renamed or {})

  def parse_known_args(self, args=None, namespace=None):
    args = sys.argv[1:] if args is None else list(args)
    known = {s[2:] for s in self._option_string_actions if s.startswith("--")}
    try:
      args = rename_deprecated(args, known, self.renamed)
    except UsageError as e:
      self.error(str(e))
    return super().parse_known_args(args, namespace)

  def error(self, message: str):
    """One line (`prog: error: ...`) and status 2, without the usage block above it."""
    self.exit(2, f"{self.prog}: error: {message.rstrip('.')} (see --help)\n")


def one_line(error: BaseException) -> str:
  """The last line of an error's message, without a leading `SomeError: ` (config_flags embeds
  the config file's whole traceback in its messages; the last line is the error itself)."""
  text = str(error.args[0]) if len(error.args) == 1 else str(error)
  lines = [line.strip() for line in text.splitlines() if line.strip()] or [repr(error)]
  last = lines[-1]
  if len(last) > 1 and last[0] == last[-1] and last[0] in "\"'":  # KeyError's repr quotes
    last = last[1:-1]
  head, sep, rest = last.partition(": ")
  return rest if sep and head.isidentifier() and head.endswith("Error") else last


def error_text(error: BaseException) -> str:
  """An exception's whole message on one line: lines joined, without a KeyError's quotes, and an
  OSError as `file: reason`."""
  if isinstance(error, OSError) and error.filename and error.strerror:
    text = f"{error.filename}: {error.strerror}"
  elif len(error.args) == 1 and isinstance(error.args[0], str):
    text = error.args[0]
  else:
    text = str(error)
  return " ".join(line.strip() for line in text.splitlines() if line.strip()) or repr(error)


def config_error(error: BaseException, argv: Sequence[str], flag: str = "config") -> str:
  """One line for an error of absl / `config_flags` parsing, naming the `--config.` override.

  A misspelt override (`--config.totl_steps=5`) becomes
  `--config.totl_steps=5: no config field 'totl_steps' (did you mean total_steps?)`.
  """
  cause = error.args[0] if isinstance(error, AttributeError) and error.args else error
  if isinstance(cause, OSError) and cause.filename and cause.strerror:
    return (
      f"--{flag} {cause.filename}: {cause.strerror}; pass an existing config file "
      f"(--{flag}=path/to/config.py[:options])"
    )
  if isinstance(cause, KeyError) and cause.args:
    lines = [s.strip() for s in str(cause.args[0]).splitlines() if s.strip()]
    field = lines[0].strip("'\"") if lines else "?"
    hint = next((s for s in lines[1:] if s.startswith("Did you mean")), "")
    suggestion = hint.split('"')[1] if hint.count('"') >= 2 else ""
    overrides = [a for a in argv if a.startswith(f"--{flag}.")]
    named = [a for a in overrides if field in a.split("=", 1)[0].split(".")[1:]]
    where = (named or overrides or [f"--{flag}"])[0]
    return f"{where}: no config field {field!r}" + (
      f" (did you mean {suggestion}?)" if suggestion else "; see the config file for the fields"
    )
  return one_line(error)


def config_file_error(error: BaseException, flag: str = "config") -> str:
  """One line for a config file that `config_flags` could not load (it says so only when the
  config is first used, with the attempts it made): `--config PATH: reason; what to do`."""
  last = one_line(error)
  match = re.fullmatch(r"\[Errno \d+\] (.+?): '(.+)'", last)
  if match:
    return (
      f"--{flag} {match.group(2)}: {match.group(1)}; pass an existing config file "
      f"(--{flag}=path/to/config.py[:options])"
    )
  return f"--{flag}: {last}"


def absl_parse(
  argv: Sequence[str],
  *,
  doc: str,
  renamed: Mapping[str, str] | None = None,
  config_flag: str = "config",
):
  """absl flag parsing by this module's conventions; pass as `app.run(flags_parser=...)`.

  `--help` prints `doc` and the program's flags and exits 0; deprecated spellings are renamed;
  `--config=configs/NAME.py[:OPTIONS]` names the packaged config when no such file exists
  (`clef_jax.configs.resolve`); any parsing error (unknown flag, bad value, misspelt `--config.` override, unreadable config
  file) is one `error:` line on stderr and exit status 1.
  """
  from absl import flags

  argv = list(argv)
  if wants_help(argv[1:]):
    full = any(a.split("=", 1)[0] == "--helpfull" for a in argv[1:])
    flag_help = flags.FLAGS.get_help() if full else flags.FLAGS.main_module_help()
    print(f"{doc.rstrip()}\n\nFlags:\n{flag_help}" if flag_help else doc.rstrip(), flush=True)
    sys.exit(0)
  from clef_jax import configs

  try:
    argv = argv[:1] + rename_deprecated(argv[1:], set(flags.FLAGS), renamed)
    argv = configs.resolve_argv(argv, config_flag)
    return flags.FLAGS(argv)
  except Exception as e:  # Flag errors, and config_flags' own (bad override paths, file errors).
    print(f"error: {config_error(e, argv[1:], config_flag)}", file=sys.stderr, flush=True)
    sys.exit(1)


def start_host_allocator(choice: object, setting: str, *, reexec: bool = True) -> None:
  """First thing in a command's run: re-executes the same command with the caching host
  allocator preloaded when `choice` is "cache" (`clef_jax.allocator`; it returns at once when
  the allocator is active already, `choice` is "system" or the library cannot be built). A bad
  `choice` ends in one `error:` line naming `setting` (`--config.host_allocator`), exit 1.
  `reexec=False` (a command run in-process with its own argv) only checks `choice`."""
  from clef_jax import allocator

  if choice not in allocator.CHOICES:
    print(
      f"error: host_allocator={choice!r}: must be one of {', '.join(allocator.CHOICES)}; "
      f"set {setting}=...",
      file=sys.stderr,
      flush=True,
    )
    sys.exit(1)
  if reexec:
    allocator.reexec_preloaded(choice)


def check_output_dir(
  path: str | os.PathLike, flag: str, *, shown: str | os.PathLike | None = None
) -> pathlib.Path:
  """Fails early, in one line, when directory `path` cannot be created or written to.

  A missing directory is fine (it is created later, with its parents); one under a regular file,
  a regular file itself, or one in a directory this user cannot write is not. Remote paths
  (`gs://...`) are left to the library that writes them.

  Args:
    path: the directory.
    flag: the flag it came from, for the message.
    shown: what the message calls the flag's value (default `path`; a file in `path`).

  Raises:
    UsageError: naming `flag`, the path and what to do.
  """
  text = os.fspath(path)
  p = pathlib.Path(text).expanduser()
  if "://" in text:
    return p
  value = p if shown is None else pathlib.Path(shown).expanduser()
  ancestor = p
  while not ancestor.exists() and ancestor != ancestor.parent:
    ancestor = ancestor.parent
  if not ancestor.is_dir():
    where = "is a file" if ancestor == value else f"{ancestor} is a file"
    raise UsageError(f"{flag} {value}: {where}, not a directory; choose another {flag}.")
  if not os.access(ancestor, os.W_OK | os.X_OK):
    raise UsageError(
      f"{flag} {value}: directory {ancestor} is not writable; choose another "
      f"{flag} or fix its permissions."
    )
  return p


def check_output_file(path: str | os.PathLike, flag: str, *, overwrite: bool) -> pathlib.Path:
  """`check_output_dir` for a file's folder; an existing file is refused unless `overwrite`.

  Raises:
    UsageError: naming `flag`, the path and what to do.
  """
  p = pathlib.Path(path).expanduser()
  if p.is_dir():
    raise UsageError(f"{flag} {p}: is a directory; name a file.")
  if p.exists() and not overwrite:
    raise UsageError(
      f"{flag} {p}: already exists; pass --overwrite to replace it, or choose another {flag}."
    )
  check_output_dir(p.parent, flag, shown=p)
  return p
