"""What both backbones' weight converters share: param trees as flat dicts, and strict key checks.

Pure Python + numpy. torch is imported only by `import_torch`, and no JAX at all, so that
`import clef_jax.export` stays light.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

Path = tuple[str, ...]


def import_torch():
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("This function needs PyTorch: pip install 'clef_jax[torch]'.") from e
  return torch


def to_numpy(value: Any) -> np.ndarray:
  """torch.Tensor (any dtype/device, incl. bfloat16), jax.Array or array-like -> numpy."""
  if hasattr(value, "detach"):  # torch.Tensor, without importing torch here.
    value = value.detach().cpu()
    if value.is_floating_point():
      value = value.float()  # bfloat16/float16 have no (exact) numpy counterpart.
    return value.numpy()
  return np.asarray(value)


def unwrap_params(params: Mapping[str, Any]) -> Mapping[str, Any]:
  """Accepts `params` or the variables dict `{"params": params}`."""
  if set(params) == {"params"}:
    return params["params"]
  return params


def flatten(tree: Mapping[str, Any], prefix: Path = ()) -> dict[Path, Any]:
  """Nested dicts -> {path tuple: leaf}."""
  flat = {}
  for k, v in tree.items():
    if isinstance(v, Mapping):
      flat.update(flatten(v, prefix + (k,)))
    else:
      flat[prefix + (k,)] = v
  return flat


def unflatten(flat: Mapping[Path, Any]) -> dict[str, Any]:
  """{path tuple: leaf} -> nested dicts (the inverse of `flatten`)."""
  tree: dict[str, Any] = {}
  for path, v in flat.items():
    node = tree
    for k in path[:-1]:
      node = node.setdefault(k, {})
    node[path[-1]] = v
  return tree


def flat_numpy_params(params: Mapping[str, Any]) -> dict[Path, np.ndarray]:
  """`params` or `{"params": params}` of jax/numpy/torch arrays -> {path: numpy array}."""
  return {path: to_numpy(v) for path, v in flatten(unwrap_params(params)).items()}


def compare(
  actual: Mapping[Any, tuple[int, ...]],
  expected: Mapping[Any, tuple[int, ...]],
  required: Iterable[Any] | None = None,
  name=str,
) -> tuple[list[str], list[str], list[str]]:
  """(missing, unexpected, wrong shape) names of `actual` shapes against `expected` ones.

  `required`: the expected entries that must be present (default: all of them); `name` renders
  an entry for the message (e.g. "/".join for Flax paths).
  """
  required = list(expected) if required is None else list(required)
  missing = [name(k) for k in required if k not in actual]
  unexpected = [name(k) for k in actual if k not in expected]
  wrong = [
    f"{name(k)} {tuple(s)} != {tuple(expected[k])}"
    for k, s in actual.items()
    if k in expected and tuple(s) != tuple(expected[k])
  ]
  return missing, unexpected, wrong


def _some(names: Sequence[str], limit: int = 5) -> str:
  shown = ", ".join(names[:limit])
  return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def raise_mismatch(
  what: str,
  layout: str,
  missing: Sequence[str],
  unexpected: Sequence[str],
  wrong_shape: Sequence[str],
  notes: Sequence[str] = (),
) -> None:
  """Raises one ValueError, one line, naming every kind of problem; returns if there is none.

  Each list shows its first few names and how many more there are.
  """
  if not (missing or unexpected or wrong_shape):
    return
  parts = []
  if missing:
    parts.append(f"missing ({len(missing)}): {_some(missing)}")
  if unexpected:
    parts.append(f"unexpected ({len(unexpected)}): {_some(unexpected)}")
  if wrong_shape:
    parts.append(f"wrong shape ({len(wrong_shape)}): {_some(wrong_shape)}")
  parts.extend(f"({n})" for n in notes)
  raise ValueError(f"{what} does not match the {layout} layout: " + "; ".join(parts))


def check_values(what: str, arrays: Mapping[str, np.ndarray]) -> None:
  """Weights must be finite floating-point numbers: refuses integer, bool or complex tensors
  and NaN/inf values (which load without error and then give NaN or constant embeddings).

  Raises:
    ValueError: one line naming the first offending entries and what to do.
  """
  not_float = [
    f"{k} ({a.dtype})" for k, a in arrays.items() if not np.issubdtype(a.dtype, np.floating)
  ]
  if not_float:
    raise ValueError(
      f"{what}: {len(not_float)} weights are not floating point "
      f"({_some(not_float, 3)}); this is not a trained model's weight file: "
      "re-export it from the training run."
    )
  bad = [k for k, a in arrays.items() if not np.isfinite(a).all()]
  if bad:
    raise ValueError(
      f"{what}: {len(bad)} weights hold NaN or inf ({_some(bad, 3)}); the file "
      "is damaged or the training diverged: use an earlier checkpoint."
    )
