r"""Build one of the `clef_jax/datasets/<name>/` TFDS datasets as ArrayRecord, with a report.

    python -m clef_jax.build NAME [--config CFG] [--manual_dir DIR] --data_dir OUT [--overwrite] \
        [--option KEY=VALUE ...]

    python -m clef_jax.build physionet_challenge --manual_dir ../shared/data/cinc2021 \
        --data_dir /tmp/tfds
    python -m clef_jax.build ptbxl --config 100hz --manual_dir ~/ptb-xl-1.0.3 --data_dir ~/tfds
    python -m clef_jax.build mimic_iv_ecg --config one_per_patient --manual_dir ~/mimic-iv-ecg \
        --data_dir ~/tfds --option metadata_csv=~/mimiciv_metadata_with_score2.csv

NAME is any folder `clef_jax/datasets/<NAME>/` holding `<NAME>_dataset_builder.py` with a
`Builder` class. The result lands in `OUT/NAME/CFG/VERSION/` together with `build_report.json`
(records kept, skipped per reason with example ids, flags, windows per record, duration). Reading
it back needs no code from this repository:

    tfds.data_source("NAME/CFG", data_dir=OUT, split="train")

Builds are atomic: TFDS writes into `incomplete.*` and renames it when done (the builders' report is
written before the rename); with `--overwrite` the previous version is moved aside and only deleted
once the new one is complete. An existing complete version is reused unless `--overwrite`. What a
killed build leaves (`incomplete.*`, a moved-aside version) is cleaned up by the next build of
that version (a moved-aside complete version is put back); two builds of one version at once are
refused (a lock the kernel drops when a build dies).

Exit status: 0 built (or already built); 1 the build failed (one line; bad records are skipped
and counted in the report, not failures); 2 bad arguments; 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import importlib
import json
import os
import pathlib
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

from clef_jax import build_report, cli, files

# The builders are the subpackages `clef_jax.datasets.<name>` (TFDS's own layout:
# `<name>/<name>_dataset_builder.py` with a `Builder` class, which TFDS names after its module).
DATASETS_PACKAGE = "clef_jax.datasets"
DATASETS_DIR = pathlib.Path(__file__).resolve().parent / "datasets"


def available_datasets() -> list[str]:
  """Names of the `clef_jax/datasets/<name>/<name>_dataset_builder.py` folders."""
  return sorted(
    p.name for p in DATASETS_DIR.iterdir() if (p / f"{p.name}_dataset_builder.py").is_file()
  )


def dataset_module(name: str, module: str | None = None):
  """Imports `clef_jax.datasets.<name>.<module>` (default: the `<name>_dataset_builder` module)."""
  if not (DATASETS_DIR / name / f"{name}_dataset_builder.py").is_file():
    raise ValueError(
      f"No builder {name!r}: expected {DATASETS_DIR / name}/{name}_dataset_builder.py. "
      f"Available: {', '.join(available_datasets()) or 'none'}."
    )
  return importlib.import_module(f"{DATASETS_PACKAGE}.{name}.{module or name + '_dataset_builder'}")


def builder_class(name: str):
  """The `Builder` class of `clef_jax/datasets/<name>/<name>_dataset_builder.py`."""
  return dataset_module(name).Builder


def _parse_value(text: str) -> Any:
  """`--option` values: JSON when it parses (numbers, booleans, lists), else the raw string."""
  try:
    return json.loads(text)
  except json.JSONDecodeError:
    return os.path.expanduser(text)


def _fallback_report(builder, duration_s: float) -> dict[str, Any]:
  """A minimal report for builders that do not use `build_report.ReportingBuilder`."""
  examples = {name: split.num_examples for name, split in builder.info.splits.items()}
  report = build_report.BuildReport(
    dataset=builder.name,
    config=builder.builder_config.name if builder.builder_config else None,
    version=str(builder.version),
  ).to_dict()
  report.update(
    duration_s=round(duration_s, 3),
    examples=examples,
    examples_total=sum(examples.values()),
    note="records = examples: this builder does not report per-record decisions",
  )
  report["records"].update(seen=sum(examples.values()), kept=sum(examples.values()))
  return report


def build(
  name: str,
  *,
  data_dir: str | os.PathLike,
  config: str | None = None,
  manual_dir: str | os.PathLike | None = None,
  overwrite: bool = False,
  builder_kwargs: dict[str, Any] | None = None,
) -> pathlib.Path:
  """Builds dataset `name` as ArrayRecord and returns the path of its `build_report.json`.

  Args:
    name: folder under `clef_jax/datasets/`; `name/config` is accepted too.
    data_dir: TFDS data directory to build into.
    config: builder config name (default: the builder's default).
    manual_dir: folder holding the manually downloaded archive.
    overwrite: rebuild even if this version exists (the old one is removed only on success).
    builder_kwargs: extra keyword arguments for the `Builder` constructor.

  Returns:
    Path of `build_report.json` in the dataset's version directory.

  Raises:
    BuildLocked: another build of this dataset config is running.
  """
  if "/" in name:
    name, config = name.split("/", 1)

  def make_builder():
    return builder_class(name)(
      data_dir=os.fspath(data_dir),
      config=config,
      file_format="array_record",
      **(builder_kwargs or {}),
    )

  builder = make_builder()
  data_path = pathlib.Path(builder.data_path)
  report_path = data_path / build_report.REPORT_FILENAME
  data_path.parent.mkdir(parents=True, exist_ok=True)
  with _build_lock(data_path):
    if clean_leftovers(data_path):
      builder = make_builder()  # It may have seen the version that was just put back.
    return _build_locked(
      builder, make_builder, data_path, report_path, overwrite=overwrite, manual_dir=manual_dir
    )


@contextlib.contextmanager
def _build_lock(data_path: pathlib.Path):
  """One build of a version at a time: an exclusive `flock` on the version's parent folder.

  The kernel drops a `flock` however its process ends (kill -9 too), so a held lock means a
  live build and leftovers found while holding it are a dead one's. Locking the folder itself
  leaves no lock file among the versions.

  Raises:
    BuildLocked: another live process is building into the folder.
  """
  fd = os.open(data_path.parent, os.O_RDONLY)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      raise BuildLocked(
        f"{data_path.parent}: another build of this dataset config is running; "
        "wait for it to finish or stop it."
      ) from None
    yield
  finally:
    os.close(fd)  # Releases the lock.


class BuildLocked(RuntimeError):
  """Another live process is building the same dataset config."""


def clean_leftovers(data_path: pathlib.Path, log: Callable[[str], Any] = print) -> bool:
  """Removes what a killed build of `data_path` left beside it; returns whether one was restored.

  TFDS builds into `incomplete.<random>_<version>/` and renames it when done; `--overwrite`
  moves the previous version to `<version>.replaced-<pid>` until the new one is complete. A build
  killed in between leaves these behind. The caller holds the version's build lock, so no live
  build owns them: incomplete folders are deleted, and a moved-aside version is put back when no
  complete version took its place (it was complete), else deleted.
  """
  restored = False
  for leftover in sorted(data_path.parent.glob(f"incomplete.*_{data_path.name}")):
    shutil.rmtree(leftover, ignore_errors=True)
    log(f"removed {leftover} (left by an interrupted build)")
  for moved in sorted(data_path.parent.glob(f"{data_path.name}.replaced-*")):
    if not data_path.exists():
      moved.rename(data_path)
      restored = True
      log(f"restored {data_path} from {moved.name} (an interrupted --overwrite build)")
    else:
      shutil.rmtree(moved, ignore_errors=True)
      log(f"removed {moved} (the version an interrupted --overwrite build replaced)")
  return restored


def _build_locked(
  builder,
  make_builder,
  data_path: pathlib.Path,
  report_path: pathlib.Path,
  *,
  overwrite: bool,
  manual_dir,
) -> pathlib.Path:
  """`build` once the version's lock is held and leftovers are gone."""
  import tensorflow_datasets as tfds  # Lazy: heavy import.

  if data_path.exists() and not overwrite:
    print(f"{builder.info.full_name} already built at {data_path} (use --overwrite to rebuild)")
    return report_path

  # Move the old version aside rather than letting TFDS delete it up front, so a failed rebuild
  # leaves the previous complete dataset in place. The builder is re-made afterwards: one made
  # while a version exists has already loaded that version's DatasetInfo.
  replaced = None
  if data_path.exists():
    replaced = data_path.with_name(f"{data_path.name}.replaced-{os.getpid()}")
    data_path.rename(replaced)
    builder = make_builder()
  start = time.monotonic()
  try:
    with tempfile.TemporaryDirectory(prefix="clef_build_") as download_dir:  # Nothing downloads.
      builder.download_and_prepare(
        download_dir=download_dir,
        download_config=tfds.download.DownloadConfig(
          manual_dir=os.fspath(manual_dir) if manual_dir else None
        ),
      )
  except BaseException:
    if replaced is not None and not data_path.exists():
      replaced.rename(data_path)
    report = getattr(builder, "_report", None)
    if report is not None:  # Say what was read before the failure; outside the version dir.
      report.finish()
      print(report.summary(), file=sys.stderr)
      try:
        data_path.parent.mkdir(parents=True, exist_ok=True)
        failed = report.write(data_path.parent / f"{data_path.name}.failed_{report_path.name}")
        print(f"build FAILED; partial report: {failed}", file=sys.stderr)
      except OSError:  # Never mask the build's own error.
        pass
    raise
  if replaced is not None:
    shutil.rmtree(replaced)
  if not report_path.exists():  # Written after the rename, but atomically (tmp + rename).
    files.atomic_write_text(
      report_path, json.dumps(_fallback_report(builder, time.monotonic() - start), indent=2)
    )
  return report_path


def dummy_data_main(
  write_dummy_data: Callable[[str], Any], argv: Sequence[str] | None = None
) -> int:
  """Command line of every `clef_jax/datasets/<name>/dummy_data_generation.py`: `--out_dir DIR`.

  Writes that builder's tiny fake archive (for tests and trying a build) and prints its folder.
  """
  parser = argparse.ArgumentParser(description="Writes a tiny fake archive for this builder.")
  parser.add_argument("--out_dir", required=True, help="where to write the tree")
  parser.add_argument(
    "--extra",
    type=int,
    default=0,
    help="well-formed records added so every split holds every class (the "
    "generator's docstring says how they are labelled)",
  )
  args = parser.parse_args(argv)
  if args.extra < 0:
    parser.error(f"--extra must be >= 0; got {args.extra}")
  print(write_dummy_data(args.out_dir, **({"extra": args.extra} if args.extra else {})))
  return 0


def main(argv: Sequence[str] | None = None) -> int:
  # argparse rather than absl flags: importing this module must not define global flags that
  # could collide with the trainer's (`--config`).
  parser = cli.ArgumentParser(
    prog="python -m clef_jax.build",
    description=__doc__.split("\n\n")[0],
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  parser.add_argument("name", help=f"dataset: one of {', '.join(available_datasets())}")
  parser.add_argument("--config", default=None, help="builder config name")
  parser.add_argument("--manual_dir", default=None, help="folder of the downloaded archive")
  parser.add_argument("--data_dir", required=True, help="TFDS data directory to build into")
  parser.add_argument("--overwrite", action="store_true", help="rebuild an existing version")
  parser.add_argument(
    "--option",
    action="append",
    default=[],
    metavar="KEY=VALUE",
    help="extra Builder keyword argument (repeatable)",
  )
  args = parser.parse_args(argv)
  kwargs = {}
  for item in args.option:
    key, sep, value = item.partition("=")
    if not sep:
      parser.error(f"--option expects KEY=VALUE, got {item!r}")
    kwargs[key.strip()] = _parse_value(value)
  name = args.name.split("/", 1)[0]
  if name not in available_datasets():
    parser.error(f"no dataset {name!r}; choose one of {', '.join(available_datasets())}")
  manual_dir = os.path.expanduser(args.manual_dir) if args.manual_dir else None
  try:
    cli.check_output_dir(args.data_dir, "--data_dir")
  except cli.UsageError as e:
    parser.error(str(e))
  if manual_dir and not os.path.isdir(manual_dir):
    parser.error(
      f"--manual_dir {manual_dir}: no such directory; pass the folder holding the "
      "downloaded archive"
    )
  builder_cls = builder_class(name)
  instructions = getattr(builder_cls, "MANUAL_DOWNLOAD_INSTRUCTIONS", None)
  if instructions and not manual_dir:
    parser.error(
      f"{name} builds from a downloaded archive: pass --manual_dir DIR. "
      + " ".join(instructions.split())
    )
  config_names = [c.name for c in getattr(builder_cls, "BUILDER_CONFIGS", None) or []]
  config = args.config or (args.name.split("/", 1)[1] if "/" in args.name else None)
  if config and config_names and config not in config_names and not kwargs:
    parser.error(
      f"--config {config}: {name} has no such config; choose one of {', '.join(config_names)}"
    )
  try:
    report_path = build(
      args.name,
      data_dir=args.data_dir,
      config=args.config,
      manual_dir=manual_dir,
      overwrite=args.overwrite,
      builder_kwargs=kwargs,
    )
  except BuildLocked as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  except KeyboardInterrupt:
    print(
      f"error: interrupted; {name} was not built (a previous complete version is kept; "
      "rerun to build).",
      file=sys.stderr,
    )
    return 130
  except Exception as e:  # Builders, TFDS and the file system fail in many ways: one line each.
    if isinstance(e, TypeError) and "unexpected keyword argument" in str(e) and kwargs:
      key = str(e).split("'")[1] if str(e).count("'") >= 2 else "?"
      print(
        f"error: --option {key}=...: {name}'s Builder has no such option; see "
        f"clef_jax/datasets/{name}/{name}_dataset_builder.py for its keyword arguments",
        file=sys.stderr,
      )
      return 2
    if isinstance(e, ValueError) and str(e).split("=", 1)[0] in kwargs:  # A builder's check.
      print(f"error: --option {cli.error_text(e)}", file=sys.stderr)
      return 2
    first = next((s.strip() for s in str(e).splitlines() if s.strip()), "")
    print(
      f"error: building {args.name} into {args.data_dir} failed ({type(e).__name__}: {first})",
      file=sys.stderr,
    )
    return 1
  if report_path.exists():
    print(build_report.summarize(json.loads(report_path.read_text())))
  print(f"report: {report_path}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
