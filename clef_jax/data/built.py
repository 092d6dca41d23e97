"""Finding a built TFDS dataset on disk: `name[/config]` under a data dir -> its version directory.

The trainer and the evaluation resolve datasets through `resolve_dataset`, so both pick the same
build: the newest version by numeric comparison (`1.10.0` is newer than `1.9.0`).
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any

INFO_FILE = "dataset_info.json"


def version_key(name: str) -> tuple[int, ...]:
  """`"1.10.0"` -> `(1, 10, 0)`: numeric order of TFDS version directory names."""
  return tuple(int(t) if t.isdigit() else -1 for t in name.split("."))


def _versions(config_dir: pathlib.Path) -> list[pathlib.Path]:
  found = (
    [v for v in config_dir.glob("*") if (v / INFO_FILE).is_file()] if config_dir.is_dir() else []
  )
  return sorted(found, key=lambda v: version_key(v.name))


def resolve_dataset(dataset: str, data_dir: str | os.PathLike, *, hint: str = "") -> pathlib.Path:
  """TFDS `name[/config]` under `data_dir` -> its newest built version directory.

  `data_dir` may also be a version directory itself (holding `dataset_info.json`). A name without
  a config matches a dataset built without configs (`name/<version>`) or, if only one is built,
  any config (the demo's synthetic archives are named after their options).

  Args:
    dataset: `name` or `name/config`.
    data_dir: the TFDS data directory (`~` expanded).
    hint: what to tell the user when nothing is built (default: the `clef_jax.build` command).

  Raises:
    FileNotFoundError: with what was looked for (and `hint`), or naming the several builds.
  """
  root = pathlib.Path(data_dir).expanduser().absolute()
  if (root / INFO_FILE).is_file():
    return root
  name, _, config_name = dataset.partition("/")
  if config_name:
    candidates = {root / name / config_name: _versions(root / name / config_name)}
  elif _versions(root / name):
    candidates = {root / name: _versions(root / name)}
  else:
    configs = (
      sorted(p for p in (root / name).glob("*") if p.is_dir()) if (root / name).is_dir() else []
    )
    candidates = {c: _versions(c) for c in configs}
  candidates = {c: v for c, v in candidates.items() if v}
  if not candidates:
    hint = hint or (
      f"Build it with `python -m clef_jax.build {name} ...` (docs/datasets.md) or set data_dir=."
    )
    raise FileNotFoundError(
      f"Dataset {dataset} is not built in {root} (no {root / name}/"
      f"{config_name or '<config>'}/<version>/{INFO_FILE}). {hint}"
    )
  if len(candidates) > 1:
    raise FileNotFoundError(
      f"Several builds of {dataset} in {root}: "
      f"{', '.join(c.name for c in candidates)}; point data_dir at one "
      "version directory."
    )
  return next(iter(candidates.values()))[-1]


def dataset_facts(version_dir: pathlib.Path) -> dict[str, Any]:
  """What a run's manifest records about a dataset: path, version, split sizes, build report."""
  facts: dict[str, Any] = {"path": os.fspath(version_dir)}
  for name in (INFO_FILE, "build_report.json"):
    path = version_dir / name
    if path.is_file():
      data = json.loads(path.read_text())
      if name == INFO_FILE:
        facts["splits"] = {
          s["name"]: sum(int(n) for n in s.get("shardLengths", [])) for s in data.get("splits", [])
        }
        facts["version"] = data.get("version")
      else:
        facts["build_report"] = data
  return facts
