#!/usr/bin/env bash
# Net1D vs MSFormer under the same CLEF objective, data, steps and seed (docs/msformer.md).
#
#   bash scripts/compare_backbones.sh [OUT_DIR]      (default /tmp/clef_compare; ~6 min on 2 CPUs)
#
# 1. pretrains Net1D-small and MSFormer-small with `configs/small.py:demo` (same synthetic archive,
#    120 CLEF steps, seed 42), 2. linear-probes both (and a random-init Net1D) on the real
#    Challenge records in ../shared/data/cinc2021 (sex, age, Dx) and on the demo archive's labels,
#    with 1,000-resample bootstrap intervals. Reports: OUT_DIR/eval_{cinc2021,demo}/report.md.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-/tmp/clef_compare}"
CINC="${CINC:-../shared/data/cinc2021}"
PY="${PYTHON:-python}"

"$PY" -m clef_jax.main --config=configs/small.py:demo --workdir="$OUT/net1d"
"$PY" -m clef_jax.main --config=configs/small.py:demo,msformer --workdir="$OUT/msformer"
"$PY" -m clef_jax.evaluate \
  --config="configs/eval.py:sex+age+challenge_dx,wfdb=$CINC,split=0.5/0.2/0.3,batch=8,min_positives=3,head_init=zeros" \
  --model_workdir="net1d=$OUT/net1d" --compare="msformer=$OUT/msformer" --output="$OUT/eval_cinc2021"
# The demo was pretrained on 2.5-s windows (1250 samples): probe at the same length.
"$PY" -m clef_jax.evaluate --config="configs/eval.py:demo,data_dir=$OUT/net1d/data,window=1250" \
  --model_workdir="net1d=$OUT/net1d" --compare="msformer=$OUT/msformer" --output="$OUT/eval_demo"
