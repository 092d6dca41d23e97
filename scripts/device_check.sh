#!/usr/bin/env bash
# GPU check: small and medium bf16 CLEF training, as `python -m clef_jax.main` runs it, on this
# machine's NVIDIA GPU(s), in under 5 minutes: compile time, steps/s and signals/s on a
# device-resident batch and fed by the real grain pipeline, the input pipeline's share of the step,
# and MFU against the GPU's peak (`python -m clef_jax.bench device --help`).
#
#   bash scripts/device_check.sh [OUT_DIR] [bench device flags...]   (default OUT_DIR: $OUT or
#                                                                       /tmp/clef_device_check)
#
# Installs nothing beyond the project and its cuda13 extra:
# * where grain, TFDS, wfdb and ml-collections import already, nothing;
# * else, with a wheel folder ($CLEF_WHEELS, default .whl, from `bash scripts/device_wheels.sh` on
#   a machine with network access) beside the checkout: those wheels, offline, into
#   /tmp/clef_site, next to the image's own jax + CUDA plugin, flax, optax and orbax;
# * else `pip install -e '.[cuda13]'` (needs network).
# Writes OUT_DIR/device_check.json (atomically), OUT_DIR/device_check.log and OUT_DIR/nvidia-smi.txt.
# CLEF_DEVICE_CHECK_CPU=1 lets it run without a GPU (the tests smoke-test this script so, with
# `--sizes tiny`).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${1:-${OUT:-/tmp/clef_device_check}}"
shift $(( $# > 0 ? 1 : 0 ))
PY="${PYTHON:-python3}"
WHEELS="${CLEF_WHEELS:-.whl}"
mkdir -p "$OUT_DIR"
start=$(date +%s)

if ! "$PY" -c 'import grain, tensorflow_datasets, wfdb, ml_collections, tensorboardX' 2>/dev/null
then
  if compgen -G "$WHEELS/*.whl" >/dev/null; then
    echo "installing $(ls "$WHEELS"/*.whl | wc -l) wheels from $WHEELS into /tmp/clef_site"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/clef_site "$WHEELS"/*.whl
    export PYTHONPATH="/tmp/clef_site${PYTHONPATH:+:$PYTHONPATH}"
  else
    "$PY" -m pip install -q -e '.[cuda13]'
  fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 OPENBLAS_NUM_THREADS=1

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit \
  --format=csv > "$OUT_DIR/nvidia-smi.txt" 2>&1 || echo "nvidia-smi: not available" \
  > "$OUT_DIR/nvidia-smi.txt"
cat "$OUT_DIR/nvidia-smi.txt"
"$PY" -c 'import jax, sys
d = jax.devices()
print(f"jax {jax.__version__}: {len(d)} x {d[0].device_kind} ({d[0].platform})")
if d[0].platform != "gpu" and sys.argv[1] != "1":
  sys.exit(f"error: jax sees no GPU (platform {d[0].platform}); on an NVIDIA machine install "
           "the cuda13 extra: pip install -e .[cuda13]")' "${CLEF_DEVICE_CHECK_CPU:-0}"

# The whole check stays under 5 minutes: the bench is stopped at 270 s whatever it measured.
set -o pipefail
timeout 270 "$PY" -m clef_jax.bench device --json "$OUT_DIR/device_check.json" "$@" 2>&1 \
  | tee "$OUT_DIR/device_check.log"
echo "device check done in $(( $(date +%s) - start )) s; results in $OUT_DIR/device_check.json"
