r"""Net1D-small (448K parameters, 256-d embeddings): the paper's smallest CLEF model.

Demo, anywhere (synthetic archive built into <workdir>/data; about 2 min on a 2-core CPU, 104 s
measured; 1.7 GB RAM):

    python -m clef_jax.main --config=configs/small.py:demo --workdir=/tmp/clef_small_demo

Real run, the paper's recipe (MIMIC-IV-ECG one record per patient, 161K records, batch 64,
100 epochs = ~250K steps of 2 x 64 10-s views; built first, see docs/datasets.md):

    python -m clef_jax.main --config=configs/small.py --workdir=$HOME/runs/clef_small \
        --config.input.data_dir=$HOME/tensorflow_datasets

Expected cost of the real run: 24 GFLOP per step (fwd + bwd of 2 x 64 views of 5000 samples,
XLA cost analysis), ~6 PFLOP for 100 epochs: about a minute of compute at a sustained
100 TFLOP/s, so on a GPU the host-side input pipeline (16M records x 2 views filtered, noised and
z-scored; raise `input.num_workers`) sets the pace; weeks on a CPU. Options: see
configs/base.py (e.g. `configs/small.py:simclr,lead=I`).
"""

from clef_jax.configs import base

# Demo: 2.5-s windows of 2,000 synthetic subjects (the archive stores just those 2.5 s), batch 32,
# 120 steps at lr 3e-3 (the paper's 1e-4 barely moves the weights in 120 steps). The probe reads
# the first 400 records of each split (train / validation / test). Measured in docs/running.md:
# pretraining lifts rhythm's AUROC over the same network's random init by ~0.08 (the one paired
# interval that excludes 0).
DEMO = {
  "input.build.num_subjects": 2000,
  "input.build.duration_s": 2.5,
  "input.window": 1250,
  "input.batch_size": 32,
  "total_steps": 120,
  "optim.learning_rate": 3e-3,
  "evals.probe.data.max_records": 400,
}


def get_config(arg=None):
  return base.get_config(arg, size="small", demo=DEMO)
