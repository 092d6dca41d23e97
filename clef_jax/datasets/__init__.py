"""The TFDS dataset builders: `<name>/<name>_dataset_builder.py`, built by `python -m clef_jax.build`."""
