"""The PyTorch side of `python -m clef_jax.bench model`: the twin with the JAX weights.

`build_torch` loads `clef_jax.export.TorchNet1D` / `TorchMSFormer` with the JAX model's weights
(strict) and returns the inference and training closures the benchmark interleaves with the JAX
ones; `parity` checks that both sides compute the same embeddings.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np


def torch_info_nce(z, temperature: float):
  """Plain InfoNCE (NT-Xent), the twin of `clef_jax.losses.info_nce`: z is (2B, D), mean."""
  import torch
  import torch.nn.functional as F

  n = z.shape[0]
  u = F.normalize(z, dim=-1)
  logits = (u @ u.T) / temperature
  logits = logits.masked_fill(torch.eye(n, dtype=torch.bool), float("-inf"))  # Drop self.
  targets = (torch.arange(n) + n // 2) % n  # Partner row.
  return F.cross_entropy(logits, targets)


def build_torch(
  args: argparse.Namespace,
  jax_params: Any,
  *,
  learning_rate: float,
  weight_decay: float,
  temperature: float,
) -> dict[str, Any]:
  """The PyTorch twin with the JAX model's weights, and the two step closures.

  The train step is the JAX side's: InfoNCE at `temperature`, then torch's AdamW.
  """
  import torch

  from clef_jax import export

  torch.set_num_threads(args.threads)
  if args.backbone == "net1d":
    net = export.TorchNet1D(args.size, in_channels=args.in_channels)
    state = export.to_torch_state_dict(jax_params, size=args.size, in_channels=args.in_channels)
  else:
    net = export.TorchMSFormer(args.size, in_channels=args.in_channels)
    state = export.msformer_to_torch_state_dict(
      jax_params, size=args.size, in_channels=args.in_channels
    )
  net.load_state_dict(state, strict=True)
  out = {"net": net}
  rng = np.random.default_rng(args.seed)
  if "infer" in args.modes:
    x = torch.from_numpy(
      rng.standard_normal((args.batch, args.in_channels, args.length), np.float32)
    )

    def run_infer():
      with torch.inference_mode():
        net(x)

    out["infer"] = run_infer
  if "train" in args.modes:
    train_net = type(net)(args.size, in_channels=args.in_channels)
    train_net.load_state_dict(state, strict=True)
    opt = torch.optim.AdamW(train_net.parameters(), lr=learning_rate, weight_decay=weight_decay)
    x2 = torch.from_numpy(
      rng.standard_normal((2 * args.batch, args.in_channels, args.length), np.float32)
    )

    def run_train():
      opt.zero_grad(set_to_none=True)
      loss = torch_info_nce(train_net(x2), temperature)
      loss.backward()
      opt.step()
      return float(loss.detach())

    out["train"] = run_train
  return out


def parity(args: argparse.Namespace, jax_side: dict[str, Any], torch_side: dict[str, Any]) -> float:
  """Max |JAX - torch| of the embeddings of 2 random signals (same weights): a sanity check."""
  import jax.numpy as jnp
  import torch

  x = (
    np.random.default_rng(args.seed + 1)
    .standard_normal((2, args.length, args.in_channels))
    .astype(np.float32)
  )
  zj = np.asarray(jax_side["model"].apply({"params": jax_side["params"]}, jnp.asarray(x))[0])
  with torch.inference_mode():
    zt = torch_side["net"](torch.from_numpy(x.transpose(0, 2, 1).copy())).numpy()
  return float(np.max(np.abs(zj.astype(np.float32) - zt)))
