#!/usr/bin/env bash
# Issue 16 at this session's final source tree, on one GPU, in one call (repo root, $OUT set, wheelhouse/ built):
#   bash docs/results/h100/issue16/third/run-final.sh
# 1. the step benchmarks (raw and megatron, b128 and b8192) and summarize.py's ratios (install_and_bench.sh);
# 2. the one-GPU pipeline cell, `nox -s "gpu(devices=1, precision='32')"`, whose summary holds the test accuracy.
set -uo pipefail
: "${OUT:?set OUT to the folder for the results}"
source docs/results/h100/issue16/install_and_bench.sh
python3 -m nox -s "gpu(devices=1, precision='32')" > "$OUT/gpu-cell.log" 2>&1; echo "gpu cell rc=$?" | tee -a "$OUT/gpu-cell.log"
cp results/gpu/d1-32/summary.json "$OUT/summary-d1-32.json" 2>/dev/null
grep -E "passed|failed" "$OUT/gpu-cell.log" | tail -1
python3 -c "import json; print('test accuracy', json.load(open('$OUT/summary-d1-32.json')).get('test_accuracy'))"
el done
