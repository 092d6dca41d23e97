"""Layers with PyTorch's default initialisation, shared by Net1D and the method modules.

`torch.nn.Linear` / `Conv1d` draw weights with kaiming_uniform(a=sqrt(5)), which is
U(-1/sqrt(fan_in), 1/sqrt(fan_in)), and biases from the same interval. Modules built from these
start from the same distributions as their PyTorch counterparts.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

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
  """nn.Linear with PyTorch-default initialisation."""

  features: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    in_ch = x.shape[-1]
    kernel = self.param("kernel", torch_kernel_init, (in_ch, self.features), jnp.float32)
    bias = self.param("bias", torch_bias_init(in_ch), (self.features,), jnp.float32)
    return x @ kernel.astype(self.dtype) + bias.astype(self.dtype)
