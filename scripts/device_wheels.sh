#!/usr/bin/env bash
# Downloads, on a machine with network access, the wheels that `scripts/device_check.sh` installs
# offline on a GPU image that has Python 3.12 with jax + its CUDA plugin, flax, optax and orbax
# preinstalled but not this project's data stack (grain, TFDS, wfdb, ml-collections, ...).
#
#   bash scripts/device_wheels.sh [WHEEL_DIR]        (default .whl; about 15 MB)
#
# The versions are the ones constraints.txt pins; the list is the closure of clef_jax's
# requirements minus what such an image already holds (jax, numpy, scipy, pandas, etils, ...).
# Then carry WHEEL_DIR to the GPU machine beside the checkout and run
# `bash scripts/device_check.sh` there.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR="${1:-.whl}"
PY="${PYTHON:-python3}"
WHEELS=(
  array_record==0.8.6 cffi==2.1.1 dm-tree==0.1.10 docstring_parser==0.18.0
  googleapis-common-protos==1.76.0 grain==0.2.18 immutabledict==4.3.1
  importlib_resources==7.1.0 ml_collections==1.1.0 portpicker==1.6.0 promise==2.3
  pycparser==3.12 simple-parsing==0.1.9 soundfile==0.14.0 tensorboardX==2.6.5
  tensorflow-datasets==4.9.10 tensorflow-metadata==1.21.0 termcolor==3.3.0 toml==0.10.2
  wfdb==4.3.1
)
mkdir -p "$DIR"
# Pure-Python packages (promise, toml) exist only as sdists on PyPI for some versions: build a
# wheel of those here, so the GPU machine never needs a compiler or network.
for spec in "${WHEELS[@]}"; do
  if ! "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
      --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      --platform manylinux1_x86_64 -d "$DIR" "$spec" 2>/dev/null; then
    "$PY" -m pip wheel -q --no-deps -w "$DIR" "$spec"
  fi
done
ls -1 "$DIR"
du -sh "$DIR"
