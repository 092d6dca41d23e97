r"""Net1D-small (448K parameters, 256-d embeddings): the paper's smallest CLEF model.

Demo, anywhere (synthetic archive built into <workdir>/data, ~3 min on a 2-core CPU, <1 GB RAM):

    python -m clef_jax.main --config=configs/small.py:demo --workdir=/tmp/clef_small_demo

Real run, the paper's recipe (MIMIC-IV-ECG one record per patient, 161K records, batch 64,
100 epochs = ~250K steps of 2 x 64 10-s views; built first, see docs/datasets.md):

    python -m clef_jax.main --config=configs/small.py --workdir=$HOME/runs/clef_small \
        --config.input.data_dir=$HOME/tensorflow_datasets

Expected cost of the real run: about 10 GFLOP per step (fwd + bwd), i.e. ~2.5 PFLOP in all;
a few hours on one modern GPU, days on a CPU. Options: see configs/base.py
(e.g. `configs/small.py:simclr,lead=I`).
"""

from configs import base

# Demo: 2.5-s windows of 2,000 synthetic subjects (archive stores just those 2.5 s), batch 32,
# 120 steps at lr 1e-3. Measured on a 2-core CPU, see docs/running.md: pretraining lifts the
# probe's mean AUROC over the same network's random init.
DEMO = {
    "input.build.num_subjects": 2000,
    "input.build.duration_s": 2.5,
    "input.window": 1250,
    "input.batch_size": 32,
    "total_steps": 120,
    "optim.learning_rate": 1e-3,
    "evals.probe.max_records": 800,
}


def get_config(arg=None):
  return base.get_config(arg, size="small", demo=DEMO)
