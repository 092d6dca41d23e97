r"""Net1D-large (296M parameters, 2048-d embeddings): the model of the paper's headline results.

Real run (MIMIC-IV-ECG, batch 64, 100 epochs; built first, see docs/datasets.md). Parameters and
AdamW moments are sharded over the devices (`fsdp`, ZeRO-3 style: 3.6 GB of state split N ways),
the batch too:

    python -m clef_jax.main --config=configs/large.py --workdir=$HOME/runs/clef_large \
        --config.input.data_dir=$HOME/tensorflow_datasets
    python -m clef_jax.main --config=configs/large.py:bf16,remat --workdir=...   # less memory

Expected cost: 4.5 TFLOP per step (fwd + bwd of 2 x 64 views of 5000 samples, XLA cost analysis),
~1.1 EFLOP for 100 epochs: ~3 h of compute at a sustained 100 TFLOP/s (roughly one H100 in bf16
at 10 % MFU), proportionally less on a pod slice or a multi-GPU host.
Demo (synthetic data; not timed, tens of minutes on a 2-core CPU: use small or medium to try
the pipeline):

    python -m clef_jax.main --config=configs/large.py:demo --workdir=/tmp/clef_large_demo
"""

from clef_jax.configs import base

DEMO = {
  "input.build.num_subjects": 400,
  "input.build.duration_s": 2.0,
  "input.window": 1000,
  "input.batch_size": 8,
  "total_steps": 20,
  "optim.learning_rate": 3e-4,
  "evals.probe.data.max_records": 200,
}


def get_config(arg=None):
  config = base.get_config(arg, size="large", demo=DEMO)
  # ZeRO-3 style sharding of params + optimiser state (a no-op on one device); `fsdp` in `arg`
  # is accepted too. Replicate with --config.mesh.strategy=replicate.
  config.mesh.strategy = "fsdp"
  return config
