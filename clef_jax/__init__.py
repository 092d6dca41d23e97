"""clef_jax: CLEF (clinically-guided contrastive learning for ECG) in JAX/Flax.

`clef_jax.Encoder` (embedding ECG arrays and files) is imported on first use, so that
`import clef_jax` stays light.
"""

__version__ = "0.1.0"


def __getattr__(name):
  if name == "Encoder":
    from clef_jax.encoder import Encoder  # Lazy: pulls in jax, flax and the readers.

    return Encoder
  raise AttributeError(f"module 'clef_jax' has no attribute {name!r}")
