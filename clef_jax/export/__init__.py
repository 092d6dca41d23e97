"""Export/import of backbone weights to and from the official PyTorch code.

Importing this package needs neither JAX nor torch: the interop functions import torch only when
they need it, and `TorchNet1D` (the PyTorch twin) is loaded on first attribute access.
"""

from clef_jax.export.msformer_interop import (
  msformer_from_torch_state_dict,
  msformer_to_torch_state_dict,
)
from clef_jax.export.msformer_interop import param_table as msformer_param_table
from clef_jax.export.net1d_interop import from_torch_state_dict, to_torch_state_dict
from clef_jax.export.net1d_layout import state_dict_table
from clef_jax.export.torch_files import FORMATS, load_torch, save_torch

__all__ = [
  "FORMATS",
  "TorchMSFormer",
  "TorchNet1D",
  "from_torch_state_dict",
  "load_torch",
  "msformer_from_torch_state_dict",
  "msformer_param_table",
  "msformer_to_torch_state_dict",
  "save_torch",
  "state_dict_table",
  "to_torch_state_dict",
]


def __getattr__(name: str):
  # Lazy: `import clef_jax.export` must not import torch (PEP 562).
  if name == "TorchNet1D":
    from clef_jax.export.torch_net1d import TorchNet1D  # pylint: disable=g-import-not-at-top

    return TorchNet1D
  if name == "TorchMSFormer":
    from clef_jax.export.torch_msformer import TorchMSFormer  # pylint: disable=g-import-not-at-top

    return TorchMSFormer
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
