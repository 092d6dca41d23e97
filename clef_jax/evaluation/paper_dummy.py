r"""The dummy trees of the paper's seven datasets, sized so that all 18 tasks run, and built.

    python -m clef_jax.evaluation.paper_dummy --out_dir /tmp/clef_paper
    python -m clef_jax.evaluate \
        --config=configs/eval.py:paper,data_dir=/tmp/clef_paper/tfds,epochs=2,embed_batch=16 \
        --output=/tmp/clef_paper/report

Each builder's `dummy_data_generation.write_dummy_data` writes its small tree in the dataset's
published layout (the cases its builder must handle) plus `EXTRA[name]` well-formed records
labelled so that the train, validation and test split of every paper task hold every class
(tasks 1-13 get an AUROC, with both classes of each label in the test split) and several test
records (the bootstrap intervals are not degenerate). Raw trees go to `OUT/raw/<name>/`, the TFDS
builds (every config the paper's tasks read) to `OUT/tfds/`. A few seconds on a CPU; the
evaluation above takes under a minute (`epochs=2` keeps the heads' training short, `embed_batch=16`
gives the seven datasets one embedding shape, so the backbone compiles once).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
from collections.abc import Mapping, Sequence

from clef_jax import build, cli

# (builder, the configs the paper's tasks read); `None` = the builder's default config.
BUILDS: tuple[tuple[str, tuple[str | None, ...]], ...] = (
  ("ptbxl", ("100hz",)),
  ("chapman", (None,)),
  ("icentia11k", ("beat", "rhythm")),
  ("mc_med", (None,)),
  ("mimic_iv_lvef", ("csv_class",)),
  ("music_scd", (None,)),
  ("aurora_bp", ("auscultatory",)),
)
# Records (patients for Icentia11k, MUSIC and Aurora-BP) added to each dummy tree.
EXTRA: Mapping[str, int] = {
  "ptbxl": 40,
  "chapman": 40,
  "icentia11k": 12,
  "mc_med": 40,
  "mimic_iv_lvef": 30,
  "music_scd": 32,
  "aurora_bp": 20,
}


def write_and_build(
  out_dir: str | os.PathLike, *, extra: Mapping[str, int] = EXTRA, overwrite: bool = False
) -> pathlib.Path:
  """Writes the seven dummy trees under `out_dir/raw/` and builds them into `out_dir/tfds/`.

  Args:
    out_dir: output folder.
    extra: records added per dataset (default `EXTRA`).
    overwrite: rewrite trees and rebuild datasets that are already there.

  Returns:
    The TFDS data directory (`out_dir/tfds`), the `data_dir=` of `configs/eval.py:paper`.

  Raises:
    FileExistsError: a raw tree is already there and `overwrite` is False.
  """
  out_dir = pathlib.Path(out_dir).expanduser()
  raw_root, tfds_dir = out_dir / "raw", out_dir / "tfds"
  if not overwrite:
    there = [name for name, _ in BUILDS if (raw_root / name).exists()]
    if there:
      raise FileExistsError(
        f"{raw_root}: {', '.join(there)} already written; pass overwrite "
        "(--overwrite) to rewrite them, or choose another folder."
      )
  for name, configs in BUILDS:
    raw = build.dataset_module(name, "dummy_data_generation").write_dummy_data(
      raw_root / name, extra=int(extra.get(name, 0))
    )
    for config in configs:
      build.build(name, data_dir=tfds_dir, config=config, manual_dir=raw, overwrite=overwrite)
  return tfds_dir


def main(argv: Sequence[str] | None = None) -> int:
  parser = cli.ArgumentParser(
    prog="python -m clef_jax.evaluation.paper_dummy",
    description=__doc__.split("\n\n")[0],
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  parser.add_argument("--out_dir", required=True, help="folder for raw/ and tfds/")
  parser.add_argument("--overwrite", action="store_true", help="rewrite and rebuild")
  args = parser.parse_args(argv)
  try:
    tfds_dir = write_and_build(args.out_dir, overwrite=args.overwrite)
  except FileExistsError as e:
    parser.error(str(e))
  print(f"data_dir: {tfds_dir}")
  print(
    f"python -m clef_jax.evaluate --config=configs/eval.py:paper,data_dir={tfds_dir},"
    f"epochs=2,embed_batch=16 --output={pathlib.Path(args.out_dir).expanduser() / 'report'}"
  )
  return 0


if __name__ == "__main__":
  sys.exit(main())
