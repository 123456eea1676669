#!/usr/bin/env bash
# Every measurement a CPU cannot make, in one call of at most 8 minutes on one H100/H200, into one JSON:
# train_speed at the published shape (R101, crop 513, 2+2; fp32 vs bf16, channels_last off/on), the scoring
# pass on 10,000 images, and a short CamVid DSSN run (benchmarks/gpu_suite.py says what each part runs).
#
#   bash benchmarks/gpu.sh [OUT_JSON]                    # default benchmarks/results/gpu_suite.json
#   GPU_SUITE_TINY=1 bash benchmarks/gpu.sh /tmp/x.json  # tiny sizes, runs on a CPU (what CI checks)
#
# Environment: PYTHON (default .venv/bin/python, else python3), CAMVID (default ../shared/data/camvid),
# R101_WEIGHTS (ResNet-101 ImageNet weights for the CamVid run on a machine without network).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
OUT=${1:-benchmarks/results/gpu_suite.json}
ARGS=(--out "$OUT")
if [ "${GPU_SUITE_TINY:-0}" = "1" ]; then
  ARGS+=(--tiny)
  exec "$PY" benchmarks/gpu_suite.py "${ARGS[@]}"
fi
exec timeout 480 "$PY" benchmarks/gpu_suite.py "${ARGS[@]}"
