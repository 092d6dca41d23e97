"""Architecture descriptions of the backbones: size presets, block layouts, constants, counts.

Pure Python (numpy at most): the Flax modules (`clef_jax.models`), the PyTorch twins and interop
tables (`clef_jax.export`) and the parameter counts all read these, so the export side needs no
JAX and no preset is written twice.

    clef_jax.arch.net1d       Net1DVariant, VARIANTS, block_specs, parameter counts
    clef_jax.arch.msformer    MSFormerVariant, VARIANTS, LN_EPSILON, ROPE_BASE, RoPE tables,
                              token counts, parameter count
"""

BACKBONES = ("net1d", "msformer")
SIZES = ("small", "medium", "large")
