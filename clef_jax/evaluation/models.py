"""The models an evaluation compares: trained backbones from workdirs or PyTorch files, and the
random-init baseline of the same architecture that every report includes."""

from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Any

import numpy as np

RANDOM_INIT = "random init"
SIZES = ("small", "medium", "large")


@dataclasses.dataclass
class Backbone:
  """A backbone to evaluate: `model` (linen module) and host `params`."""

  label: str
  name: str
  size: str
  source: str
  model: Any
  params: Any

  def describe(self) -> dict[str, Any]:
    import jax

    n = int(sum(np.prod(np.shape(p)) for p in jax.tree_util.tree_leaves(self.params)))
    return {"source": self.source, "backbone": self.name, "size": self.size, "params": n}


def parse_model_entry(entry: str) -> tuple[str | None, str, str | None]:
  """`"[LABEL=]PATH[@SIZE]"` -> `(label or None, path, size or None)`."""
  label, sep, rest = entry.partition("=")
  if not sep or "/" in label or not label:
    label, rest = None, entry
  path, at, size = rest.rpartition("@")
  if not at or size not in SIZES:
    path, size = rest, None
  return label, path, size


def load_backbone(entry: str, *, backbone: str = "net1d") -> Backbone:
  """A `--workdir`/`--compare` entry -> `Backbone` (weights on the host).

  Directories are training workdirs, `checkpoints/` or step directories (architecture from the
  saved config); files are PyTorch weights of a `backbone` (default Net1D) whose size is given as
  `@SIZE` or appears in the file name (as the released code requires).

  Raises:
    FileNotFoundError, ValueError: unusable entry (the message says why).
  """
  from clef_jax import weights

  label, path, size = parse_model_entry(entry)
  p = pathlib.Path(path).expanduser()
  if p.is_dir():
    loaded = weights.load_backbone(p)
    label = label or p.absolute().name
  elif p.is_file():
    if size is None:
      named = [s for s in SIZES if s in p.name.lower()]
      if len(named) != 1:
        raise ValueError(f"Size of {p} unknown: write {entry}@small|medium|large.")
      size = named[0]
    loaded = weights.load_backbone(p, backbone=backbone, size=size)
    label = label or p.stem
  else:
    raise FileNotFoundError(f"No workdir or weight file {p}.")
  return Backbone(
    label=label,
    name=loaded.backbone,
    size=loaded.size,
    source=os.fspath(p.absolute()),
    model=loaded.model,
    params=loaded.params,
  )


def random_backbone(name: str, size: str, *, seed: int, window: int) -> Backbone:
  """A randomly initialised backbone (the modules' own init distributions)."""
  import jax

  from clef_jax import models
  from clef_jax.models import init as models_init

  model = models.from_config({"name": name, "size": size})
  params = jax.device_get(models_init.init_params(model, jax.random.key(seed), (1, window, 1)))
  return Backbone(
    label=RANDOM_INIT,
    name=name,
    size=size,
    source=f"random init (seed {seed})",
    model=model,
    params=params,
  )
