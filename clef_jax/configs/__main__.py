"""`python -m clef_jax.configs`: prints the folder of the packaged config files."""

from clef_jax.configs import DIR

print(DIR)
