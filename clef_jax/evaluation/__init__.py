"""Downstream evaluation (docs/evaluation.md): tasks, records, one head protocol, metrics, report.

| module | what |
|---|---|
| `tasks` | the task registry (`TASKS`, `GROUPS`) and each task's targets |
| `records` | reading a task's records (TFDS or WFDB), patient-level and published splits |
| `models` | the backbones compared, and the random-init baseline |
| `heads` | the linear head: AdamW with early stopping (default), closed-form ridge, fine-tuning |
| `scoring` | per-kind scores and metrics (`clef_jax.metrics`) |
| `protocol` | `evaluate(config, backbones)`, `run(config, ...)` |
| `report` | markdown / JSON / PNG / predictions.npz |
| `cli` | `python -m clef_jax.evaluate` |

The trainer's end-of-run probe calls `protocol.evaluate` too, so both print the same table.
"""
