"""Per-chip specifications of Cloud TPUs, for `python -m clef_jax.plan`'s roofline.

Every number is the vendor's published per-chip figure (decimal units: 1 GB = 1e9 bytes, except
where the source says GiB):

  v4   https://cloud.google.com/tpu/docs/v4: 275 TFLOP/s bf16; HBM2 32 GiB at 1200 GB/s. ICI: six
       links of 50 GB/s per direction (N. Jouppi et al., "TPU v4: An Optically Reconfigurable
       Supercomputer for Machine Learning with Hardware Support for Embeddings", ISCA 2023,
       arXiv:2304.01433), 600 GB/s bidirectional per chip.
  v5e  https://cloud.google.com/tpu/docs/v5e: 197 TFLOP/s bf16; HBM2 16 GB at 819 GB/s;
       bidirectional ICI 400 GB/s per chip.
  v5p  https://cloud.google.com/tpu/docs/v5p: 459 TFLOP/s bf16; HBM 95 GiB at 2765 GB/s;
       bidirectional ICI 1200 GB/s per chip (4800 Gbps).
  v6e  https://cloud.google.com/tpu/docs/v6e: 918 TFLOP/s bf16; HBM 32 GB at 1638 GB/s;
       bidirectional ICI 800 GB/s per chip.

`cpu` is a placeholder for `--topology=local` on a CPU host: no roofline (peak 0 = unknown).
"""

from __future__ import annotations

import dataclasses

GB = 1e9
GIB = 2**30


@dataclasses.dataclass(frozen=True)
class Chip:
  """One accelerator chip's published peak figures.

  Attributes:
    name: "v4", "v5e", "v5p", "v6e".
    peak_bf16_flops: dense bf16 FLOP/s.
    hbm_bytes: HBM capacity in bytes.
    hbm_bandwidth: HBM bytes/s.
    ici_bandwidth: bidirectional inter-chip interconnect bytes/s per chip.
  """

  name: str
  peak_bf16_flops: float
  hbm_bytes: float
  hbm_bandwidth: float
  ici_bandwidth: float


CHIPS: dict[str, Chip] = {
  "v4": Chip("v4", 275e12, 32 * GIB, 1200 * GB, 600 * GB),
  "v5e": Chip("v5e", 197e12, 16 * GB, 819 * GB, 400 * GB),
  "v5p": Chip("v5p", 459e12, 95 * GIB, 2765 * GB, 1200 * GB),
  "v6e": Chip("v6e", 918e12, 32 * GB, 1638 * GB, 800 * GB),
}

# Topology-name prefixes libtpu accepts -> table key ("v5litepod" is v5e's accelerator type).
ALIASES = {"v4": "v4", "v5e": "v5e", "v5litepod": "v5e", "v5p": "v5p", "v6e": "v6e"}


def chip_for_topology(topology_name: str) -> Chip:
  """`"v5p:2x2x1"` -> the v5p entry.

  Raises:
    KeyError: an unknown chip generation (the message lists the known ones).
  """
  prefix = topology_name.split(":", 1)[0].lower()
  if prefix not in ALIASES:
    raise KeyError(
      f"unknown TPU generation {prefix!r} in topology {topology_name!r}; known: "
      f"{', '.join(sorted(ALIASES))} (e.g. v5p:2x2x1)"
    )
  return CHIPS[ALIASES[prefix]]
