#!/usr/bin/env bash
# The first GPU run: CUDA-only tests, nar.bench --quick (graphs and eager), fp32 GPU-vs-CPU logits.
# Usage: bash scripts/gpu_check.sh OUT_DIR [--cpu-smoke]   (results: OUT_DIR/summary.json, summary.md)
set -euo pipefail
cd "$(dirname "$0")/.."
exec python -m nar.gpu_check "${1:?usage: gpu_check.sh OUT_DIR [--cpu-smoke]}" "${@:2}"
