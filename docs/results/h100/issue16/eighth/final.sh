#!/usr/bin/env bash
# Issue 16, eighth measures, the last call (repo root, $OUT set, wheelhouse/ built), on this stop's final source:
# 1. the one-GPU cell, `nox -s "gpu(devices=1, precision='32')"` (the data path's epoch order changed);
# 2. the step benchmarks and their ratios (../bench.sh).
set -uo pipefail
: "${OUT:?set OUT to the folder for the results}"
source docs/results/h100/issue16/install.sh
start=$(date +%s)
python3 -m nox -s "gpu(devices=1, precision='32')" > "$OUT/gpu-cell-final.log" 2>&1
echo "gpu cell rc=$? in $(( $(date +%s) - start )) s" | tee -a "$OUT/gpu-cell-final.log"
grep -o '"test_accuracy": [0-9.]*' "$OUT/gpu-cell-final.log" | tail -1
source docs/results/h100/issue16/bench.sh
el done
