"""clef_jax: CLEF (clinically-guided contrastive learning for ECG) in JAX/Flax."""

__version__ = "0.1.0"
