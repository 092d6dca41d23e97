"""`python -m clef_jax.evaluate`: the downstream-evaluation CLI (`clef_jax.evaluation.cli`).

The evaluation itself is the `clef_jax.evaluation` package (tasks, records, heads, report).
"""

from clef_jax.evaluation.cli import main

if __name__ == "__main__":
  main()
