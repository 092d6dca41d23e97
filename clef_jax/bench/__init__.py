"""Benchmarks: `python -m clef_jax.bench {model,loss,input} ...`."""
