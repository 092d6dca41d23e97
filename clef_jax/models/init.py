"""Fast parameter initialisation: one random draw for the whole tree.

`model.init` draws every parameter with its own `jax.random` call. XLA:CPU compiles each draw as
separate fusions, so initialising Net1D-small (102 tensors) takes ~20-40 s to *compile* on a
2-core machine, while the same numbers drawn as one vector and sliced compile in ~5 s (measured).
`init_params` gives parameters with exactly the distributions of the modules' own initialisers
(PyTorch-default uniform for Net1D; truncated normal / LeCun normal / zeros / ones for MSFormer),
from one uniform and one truncated-normal draw. The values differ from `model.init`'s; the
distributions do not (tested).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from clef_jax.models import msformer, net1d

# jax.random.truncated_normal(-2, 2) has std 0.8796...; variance_scaling divides it out.
_TRUNC_STD = 0.87962566103423978


def _rules(model, abstract: dict[str, Any]) -> list[tuple[str, float]]:
  """(kind, scale) per flattened leaf: ("uniform", bound) | ("trunc", std) | ("const", value)."""
  paths = jax.tree_util.tree_flatten_with_path(abstract)[0]
  rules = []
  for path, leaf in paths:
    keys = [getattr(p, "key", str(p)) for p in path]
    name, parent = keys[-1], keys[:-1]
    if isinstance(model, net1d.Net1D):
      # PyTorch default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias, where fan_in is
      # that of the layer's kernel: (K, Cin/g, Cout) -> K*Cin/g; Dense (in, out) -> in.
      kernel = abstract
      for k in parent:
        kernel = kernel[k]
      fan_in = math.prod(kernel["kernel"].shape[:-1])
      rules.append(("uniform", 1.0 / math.sqrt(fan_in)))
    elif isinstance(model, msformer.MSFormer):
      if name == "scale":
        rules.append(("const", 1.0))
      elif name == "bias":
        rules.append(("const", 0.0))
      elif parent and parent[-1] == "patch_embed":
        # lecun_normal: variance_scaling(1, fan_in, truncated_normal).
        rules.append(("trunc", math.sqrt(1.0 / math.prod(leaf.shape[:-1])) / _TRUNC_STD))
      else:
        rules.append(("trunc", 0.02))  # nn.initializers.truncated_normal(0.02)
    else:
      raise TypeError(f"init_params does not know {type(model).__name__}; use model.init.")
  return rules


def init_params(model, rng: jax.Array, input_shape: tuple[int, ...]) -> Any:
  """Parameters for `model` (Net1D or MSFormer), drawn in one go; pure, so jit/eval_shape-able.

  Args:
    model: a backbone from `create_backbone`.
    rng: PRNG key.
    input_shape: `(B, L, C)` of a dummy input (only C matters for the parameter shapes).

  Returns:
    The `params` collection, float32, with the distributions of `model.init`.
  """
  abstract = jax.eval_shape(model.init, rng, jnp.zeros(input_shape, jnp.float32))["params"]
  leaves, treedef = jax.tree_util.tree_flatten(abstract)
  rules = _rules(model, abstract)
  sizes = [int(np.prod(leaf.shape)) for leaf in leaves]
  n_uniform = sum(s for s, (kind, _) in zip(sizes, rules) if kind == "uniform")
  n_trunc = sum(s for s, (kind, _) in zip(sizes, rules) if kind == "trunc")
  key_u, key_t = jax.random.split(rng)
  uniform = jax.random.uniform(key_u, (n_uniform,), jnp.float32, -1.0, 1.0)
  trunc = jax.random.truncated_normal(key_t, -2.0, 2.0, (n_trunc,), jnp.float32)
  out, offsets = [], {"uniform": 0, "trunc": 0}
  pools = {"uniform": uniform, "trunc": trunc}
  for leaf, size, (kind, scale) in zip(leaves, sizes, rules):
    if kind == "const":
      out.append(jnp.full(leaf.shape, scale, jnp.float32))
      continue
    start = offsets[kind]
    out.append(pools[kind][start : start + size].reshape(leaf.shape) * scale)
    offsets[kind] = start + size
  return jax.tree_util.tree_unflatten(treedef, out)
