r"""The paper's CLEF pretraining (docs/method.md §E.1) as a `ConfigDict`, shared by small/medium/large.

Not run directly: `configs/{small,medium,large}.py` call `get_config(arg, size=...)` and document
their command and cost. `arg` is a comma-separated list of options (big_vision style), e.g.

    configs/medium.py                               the paper's run on MIMIC-IV-ECG
    configs/small.py:demo                           synthetic archive built into <workdir>/data
    configs/medium.py:simclr,lead=II,batch=256      SimCLR baseline, fixed lead, other batch
    configs/large.py:fsdp,bf16,remat,steps=1000

| option | effect |
|---|---|
| `demo` | synthetic archive built into `<workdir>/data`; short windows, few steps, higher lr |
| `tiny` | `demo` shrunk for tests: 40-subject archive, window 256, batch 8, 6 steps |
| `net1d` / `msformer` (or `backbone=`) | backbone (default `net1d`, the paper's) |
| `clef` / `simclr` / `byol` / `moco` (or `method=`) | pretraining method (default `clef`) |
| `mimic_iv_ecg` / `physionet_challenge` (or `dataset=`) | pretraining archive (default MIMIC) |
| `lead=random` / `lead=I` ... | view lead policy (default random, as the paper) |
| `bf16` | bfloat16 compute (params and loss stay float32) |
| `remat` | rematerialise each block in the backward pass (less memory) |
| `fsdp` | shard params and optimiser state over `data` (ZeRO-3 style) |
| `steps=N` / `epochs=N` / `batch=N` / `lr=X` / `seed=N` / `workers=N` | the obvious overrides |

Any field can also be set on the command line, e.g. `--config.input.data_dir=/data/tfds`.
"""

from __future__ import annotations

import ml_collections

from clef_jax import options
from clef_jax.configs import eval as eval_config

BACKBONES = ("net1d", "msformer")
METHODS = ("clef", "simclr", "byol", "moco")
DATASETS = {  # option -> TFDS name/config of the built archive
  "mimic_iv_ecg": "mimic_iv_ecg/one_per_patient",
  "physionet_challenge": "physionet_challenge/first_window",
}
FLAGS_OPTIONS = ("demo", "tiny", "bf16", "remat", "fsdp")
VALUE_OPTIONS = {
  "backbone": str,
  "method": str,
  "dataset": str,
  "lead": str,
  "steps": int,
  "epochs": int,
  "batch": int,
  "lr": float,
  "seed": int,
  "workers": int,
}


def parse_arg(arg: str | None) -> dict[str, object]:
  """`"demo,simclr,lead=I,steps=10"` -> `{"demo": True, "method": "simclr", ...}`.

  Bare backbone/method/dataset names are shorthands for `backbone=`/`method=`/`dataset=`.

  Raises:
    ValueError: one line naming the unknown option or bad value, and the valid ones.
  """
  return options.parse_options(
    options.split_items(arg),
    flags=FLAGS_OPTIONS,
    values=VALUE_OPTIONS,
    choices={"backbone": BACKBONES, "method": METHODS, "dataset": tuple(DATASETS)},
  )


def get_config(
  arg: str | None = None, *, size: str = "medium", demo: dict[str, object] | None = None
) -> ml_collections.ConfigDict:
  """The paper's pretraining recipe for Net1D-`size`, with `arg`'s options applied.

  Args:
    arg: comma-separated options (see the module docstring).
    size: backbone size preset.
    demo: the size's demo settings, `{"input.window": 1250, ...}` (dotted field paths), applied
      with the `demo` option before the explicit `steps=`/`batch=`/... overrides.
  """
  opts = parse_arg(arg)
  config = ml_collections.ConfigDict()
  config.seed = 42  # Reference `set_seed(42)`.
  # Length of the run: `total_steps` wins when > 0, else `num_epochs` over the train split
  # (epoch = len(train) // batch_size steps: the last partial batch is dropped).
  config.num_epochs = 100
  config.total_steps = 0
  config.method = "clef"
  # Start weights when the workdir has no checkpoint: an Orbax train checkpoint directory (e.g.
  # another run's `<workdir>/checkpoints`, or what `python -m clef_jax.export --from_torch` writes)
  # or a PyTorch file (CLEF Lightning `.ckpt`, state_dict, safetensors). Weights only.
  config.init_from = ""

  config.model = ml_collections.ConfigDict()
  config.model.name = "net1d"
  config.model.size = size
  config.model.dtype = "float32"  # Compute dtype; params are always float32.
  config.model.remat = False
  # Net1D's grouped-conv formulation: "auto" (XLA's kernel on GPU, the same with narrow groups
  # merged on TPU, the CPU formulation on CPU) or one of `models.conv_cpu.GROUPED_CONV_IMPLS`;
  # numerically equivalent. Ignored by MSFormer.
  config.model.conv_impl = "auto"

  config.input = ml_collections.ConfigDict()
  config.input.dataset = DATASETS["mimic_iv_ecg"]
  config.input.data_dir = "~/tensorflow_datasets"  # `{workdir}` expands to the run's workdir.
  config.input.split = "train"
  config.input.batch_size = 64  # Global, over all devices and processes.
  config.input.window = 5000  # Samples per view at 500 Hz (the reference's 10 s).
  config.input.lead = "random"  # docs/method.md §D: random leads, view 2 = view 1's with p 0.8.
  config.input.p_same_lead = 0.8
  config.input.noise = True
  config.input.noise_mat = ""  # DATA_noises_real.mat; "" -> built-in parametric noise.
  config.input.p_zero_mask = 0.2
  config.input.mask_span = (0.1, 0.3)  # Range of the zero-masked fraction of a view.
  config.input.bandpass = True  # 0.67-40 Hz Butterworth filtfilt of each view.
  config.input.zscore = True  # Per-view z-score.
  config.input.noise_rms = 0.1  # mV; std the noise window is rescaled to.
  config.input.target_fs = 500.0  # Hz the views are produced at (the models' contract).
  config.input.faithful = False  # Reproduce the official pipeline's quirks.
  config.input.num_workers = 4  # grain worker processes per host.
  config.input.read_threads = 2
  # Synthetic archive built on the fly when absent (demo only; real archives need
  # `python -m clef_jax.build` with the downloaded files).
  config.input.auto_build = False
  config.input.build = ml_collections.ConfigDict(
    {"num_subjects": 2000, "seed": 0, "duration_s": 10.0}
  )

  config.optim = ml_collections.ConfigDict()
  config.optim.learning_rate = 1e-4  # AdamW on all params, biases included.
  config.optim.weight_decay = 5e-4
  config.optim.b1 = 0.9
  config.optim.b2 = 0.999
  config.optim.eps = 1e-8
  config.optim.schedule = "cosine_restarts"  # CosineAnnealingWarmRestarts(10, 2, 1e-6).
  config.optim.interval = "epoch"  # Stepped per epoch, as Lightning did.
  config.optim.t0 = 10
  config.optim.t_mult = 2
  config.optim.eta_min = 1e-6
  config.optim.grad_clip_norm = 0.0  # 0: none (the reference does not clip).

  # `losses.clef_loss` keyword arguments (SimCLR / MoCo use `temperature` only).
  config.loss = ml_collections.ConfigDict()
  config.loss.temperature = 0.07
  config.loss.alpha = 0.2
  config.loss.use_mask = False  # Official training_step: False (docs/method.md §0.4).
  config.loss.combine = "mean"  # Code: (L^w + L^d) / 2; "sum" = the paper's equation.
  # The remaining `clef_loss` switches (docs/objective.md), official semantics by default.
  config.loss.nan_rate_meta = "propagate"
  config.loss.missing_risk = "zero"
  config.loss.weight_normalization = "row_softmax"
  config.loss.minmax_include_diagonal = True
  config.moco = ml_collections.ConfigDict({"queue_size": 65536, "momentum": 0.999})
  config.byol = ml_collections.ConfigDict({"tau": 0.996})

  config.ckpt = ml_collections.ConfigDict()
  config.ckpt.save_interval_steps = 1000
  config.ckpt.max_to_keep = 3
  config.ckpt.async_save = True
  config.ckpt.export_format = "lightning"  # Final backbone in W/export/: lightning|state_dict|
  #                                          safetensors; "" to skip.

  # Host memory for large buffers: "cache" runs the trainer with `clef_jax.allocator`'s caching
  # allocator preloaded (XLA:CPU's per-step temporary buffer is then reused instead of faulted in
  # afresh; 2x faster CPU training steps, docs/benchmarks.md); "system" keeps glibc's malloc.
  # Linux only; elsewhere, or without a C compiler, "cache" falls back to "system" with a warning.
  config.host_allocator = "cache"

  config.mesh = ml_collections.ConfigDict()
  config.mesh.num_devices = 0  # 0: every device of every process.
  config.mesh.strategy = "replicate"  # Or "fsdp".
  config.mesh.fsdp_min_size = 2**18  # Smallest leaf (elements) fsdp shards.

  config.log = ml_collections.ConfigDict()
  config.log.every_steps = 50  # Console / TensorBoard; metrics.jsonl gets every step.
  config.log.plots = True  # PNG curves in the workdir at the end.
  # Subject pairs the risk_spearman monitor ranks per step: all B (B - 1) / 2 up to this many,
  # else this many fixed pairs (each subject with its next few, cyclically); 0 = all pairs.
  config.log.risk_spearman_pairs = 4096

  # Final evaluation: the downstream protocol of `python -m clef_jax.evaluate` (configs/eval.py,
  # the same head, metrics and table), pretrained vs random init, on a labelled built dataset.
  # Off by default: MIMIC-IV-ECG has no labels; the downstream tasks are a separate step.
  config.evals = ml_collections.ConfigDict()
  config.evals.probe = eval_config.get_config("demo")
  config.evals.probe.enabled = False
  config.evals.probe.dataset = ""  # A built version directory; "" -> the training dataset.
  # "" = the pretraining lead (`input.lead`) when it names one, else lead I (the paper's).
  config.evals.probe.data.lead = ""
  config.evals.probe.data.window = 0  # 0 = `input.window`.
  config.evals.probe.plots = False

  _apply_options(config, opts, demo or {})
  return config


def _set(config: ml_collections.ConfigDict, path: str, value: object) -> None:
  *parents, leaf = path.split(".")
  for p in parents:
    config = config[p]
  config[leaf] = value


def _apply_options(
  config: ml_collections.ConfigDict, opts: dict[str, object], demo: dict[str, object]
) -> None:
  """Applies the parsed `arg` options (see the module docstring)."""
  if opts.get("demo") or opts.get("tiny"):
    config.input.dataset = "synthetic_ecg"  # Name completed by the loop from `build`.
    config.input.data_dir = "{workdir}/data"
    config.input.auto_build = True
    config.input.num_workers = 0  # Tiny batches: worker start-up costs more.
    config.evals.probe.enabled = True
    config.log.every_steps = 10
    config.ckpt.save_interval_steps = 50
    for path, value in demo.items():
      _set(config, path, value)
  if opts.get("tiny"):
    config.input.build.update(num_subjects=40, duration_s=1.0)
    config.input.window = 256
    config.input.batch_size = 8
    config.total_steps = 6
    config.ckpt.save_interval_steps = 2
    config.log.every_steps = 2
    config.evals.probe.tasks = eval_config.get_config("demo_sex+demo_risk_high").tasks
  if "backbone" in opts:
    config.model.name = opts["backbone"]
  if "method" in opts:
    config.method = opts["method"]
  if "dataset" in opts:
    config.input.dataset = DATASETS[opts["dataset"]]
  if "lead" in opts:
    config.input.lead = opts["lead"]
  if opts.get("bf16"):
    config.model.dtype = "bfloat16"
  if opts.get("remat"):
    config.model.remat = True
  if opts.get("fsdp"):
    config.mesh.strategy = "fsdp"
  if "steps" in opts:
    config.total_steps = opts["steps"]
  if "epochs" in opts:
    config.num_epochs = opts["epochs"]
    config.total_steps = 0
  if "batch" in opts:
    config.input.batch_size = opts["batch"]
  if "lr" in opts:
    config.optim.learning_rate = opts["lr"]
  if "seed" in opts:
    config.seed = opts["seed"]
  if "workers" in opts:
    config.input.num_workers = opts["workers"]
