"""Layers shared by the backbones and the method modules, and `num_params`.

`torch.nn.Linear` / `Conv1d` draw weights with kaiming_uniform(a=sqrt(5)), which is
U(-1/sqrt(fan_in), 1/sqrt(fan_in)), and biases from the same interval. `Dense` starts from those
distributions by default (Net1D and the method modules); MSFormer passes its own initialisers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
Dtype = Any

torch_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_bias_init(fan_in: int) -> Callable[..., Array]:
  """U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (zeros for fan_in = 0), like a torch layer's bias."""
  bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


class Dense(nn.Module):
  """y = x @ kernel + bias, computed in `dtype` with float32 params.

  The default init is torch.nn.Linear's: `torch_kernel_init` and a bias from
  U(-1/sqrt(fan_in), 1/sqrt(fan_in)). `kernel_init` / `bias_init` replace them.
  """

  features: int
  dtype: Dtype = jnp.float32
  kernel_init: Callable[..., Array] = torch_kernel_init
  bias_init: Callable[..., Array] | None = None  # None: torch's, from the fan-in.

  @nn.compact
  def __call__(self, x: Array) -> Array:
    in_ch = x.shape[-1]
    bias_init = torch_bias_init(in_ch) if self.bias_init is None else self.bias_init
    kernel = self.param("kernel", self.kernel_init, (in_ch, self.features), jnp.float32)
    bias = self.param("bias", bias_init, (self.features,), jnp.float32)
    return x.astype(self.dtype) @ kernel.astype(self.dtype) + bias.astype(self.dtype)


def num_params(params: Any) -> int:
  """Number of parameters (array elements) in a parameter tree."""
  return int(sum(np.prod(p.shape) for p in jax.tree_util.tree_leaves(params)))
