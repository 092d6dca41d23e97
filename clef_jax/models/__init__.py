"""Backbones: `create_backbone(name, size, ...)` builds one, `from_config(config.model)` builds the
one a config (or a saved checkpoint's config) describes.

The architectures themselves (size presets, block layouts, constants) are `clef_jax.arch`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from clef_jax.arch import BACKBONES
from clef_jax.models import msformer, net1d


def create_backbone(
  name: str,
  size: str | net1d.Net1DVariant,
  *,
  in_channels: int = 1,
  dtype: Any = jnp.float32,
  remat: bool = False,
  num_classes: int | None = None,
  **kwargs: Any,
) -> nn.Module:
  """Returns the linen backbone module.

  Args:
    name: "net1d" (the paper's CNN) or "msformer" (our multi-scale Transformer).
    size: "small" | "medium" | "large"; for Net1D also a custom `net1d.Net1DVariant`.
    in_channels: 1 (single lead) or 12.
    dtype: compute dtype (params are always float32).
    remat: gradient checkpointing per block.
    num_classes: optional linear head on the pooled embedding.
    **kwargs: backbone-specific options (e.g. `conv_impl` for Net1D, `max_global_tokens` /
      `window_size` for MSFormer).

  The module maps `(B, L, in_channels)` to `((B, D), aux)`.
  """
  if name == "net1d":
    if not isinstance(size, net1d.Net1DVariant) and size not in net1d.VARIANTS:
      raise ValueError(f"Unknown Net1D size {size!r}; choose one of {sorted(net1d.VARIANTS)}.")
    return net1d.Net1D(
      size=size,
      in_channels=in_channels,
      dtype=dtype,
      remat=remat,
      num_classes=num_classes,
      **kwargs,
    )
  if name == "msformer":
    if size not in msformer.VARIANTS:
      raise ValueError(
        f"Unknown MSFormer size {size!r}; choose one of {sorted(msformer.VARIANTS)}."
      )
    return msformer.MSFormer(
      size=size,
      in_channels=in_channels,
      dtype=dtype,
      remat=remat,
      num_classes=num_classes,
      **kwargs,
    )
  raise ValueError(f"Unknown backbone {name!r}; choose one of {BACKBONES}.")


def from_config(
  model_cfg: Mapping[str, Any], *, in_channels: int = 1, num_classes: int | None = None
) -> nn.Module:
  """`config.model` -> the backbone module.

  Args:
    model_cfg: `config.model` (a ConfigDict or the plain dict saved with a checkpoint), or any
      mapping with at least `name` and `size`. Optional fields and their defaults: `dtype`
      ("float32"), `remat` (False), `conv_impl` ("auto"; Net1D only).
    in_channels: input leads (training is single-lead).
    num_classes: optional linear head on the pooled embedding.
  """
  name = model_cfg["name"]
  kwargs: dict[str, Any] = {}
  if model_cfg.get("dtype") is not None:
    kwargs["dtype"] = jnp.dtype(model_cfg["dtype"])
  if model_cfg.get("remat") is not None:
    kwargs["remat"] = model_cfg["remat"]
  if name == "net1d" and model_cfg.get("conv_impl") is not None:
    kwargs["conv_impl"] = model_cfg["conv_impl"]
  return create_backbone(
    name, model_cfg["size"], in_channels=in_channels, num_classes=num_classes, **kwargs
  )
