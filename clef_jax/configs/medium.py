r"""Net1D-medium (30.7M parameters, 1024-d embeddings).

Demo, anywhere (synthetic archive built into <workdir>/data; ~10 min on a 2-core CPU, 3.6 GB RAM):

    python -m clef_jax.main --config=configs/medium.py:demo --workdir=/tmp/clef_medium_demo

Real run, the paper's recipe (MIMIC-IV-ECG one record per patient, batch 64, 100 epochs =
~250K steps; build it first, see docs/datasets.md), on every local GPU/TPU (data parallel):

    python -m clef_jax.main --config=configs/medium.py --workdir=$HOME/runs/clef_medium \
        --config.input.data_dir=$HOME/tensorflow_datasets
    python -m clef_jax.main --config=configs/medium.py:bf16 --workdir=...     # bf16 compute

Expected cost of the real run: 0.88 TFLOP per step (fwd + bwd of 2 x 64 views of 5000 samples,
XLA cost analysis), ~220 PFLOP for 100 epochs: ~40 min of compute at a sustained 100 TFLOP/s
(roughly one H100 in bf16 at 10 % MFU; grouped 1-D convolutions rarely do better), and the host
input pipeline needs enough workers (`input.num_workers`) to keep up. Without a built
MIMIC-IV-ECG the command stops at once and says how to build it.
"""

from clef_jax.configs import base

# Demo: medium costs ~36x small per view (XLA cost analysis), so 2-s windows, batch 16 and
# lr 1e-3 for 120 steps; the probe reads 400 records of each split.
DEMO = {
  "input.build.num_subjects": 2000,
  "input.build.duration_s": 2.0,
  "input.window": 1000,
  "input.batch_size": 16,
  "total_steps": 120,
  "optim.learning_rate": 1e-3,
  "evals.probe.data.max_records": 400,
  "evals.probe.embed_batch_size": 50,
}


def get_config(arg=None):
  return base.get_config(arg, size="medium", demo=DEMO)
