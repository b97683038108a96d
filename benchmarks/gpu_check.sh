#!/usr/bin/env bash
# The GPU checks of the ImageNet-class input, in one go, on a GPU machine whose Python already
# has jax[cuda], flax, optax, orbax and OpenCV; wheels of the rest, if in .whl/, are installed
# first (docs/data.md, "Throughput", says which). Writes JSON under ${OUT:-runs/gpu_check}.
#   benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu_check}
mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c 'import jax, cv2; print(jax.__version__, jax.devices(), cv2.__version__)'
PYTHONUNBUFFERED=1 python3 benchmarks/gpu_imagenet.py --batch_sizes "${BATCH_SIZES:-128,256}" \
  --out "$OUT/gpu_imagenet.json" 2>&1 | tee "$OUT/gpu_imagenet.log" | grep -v '^I[0-9]'
