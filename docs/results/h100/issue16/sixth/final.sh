#!/usr/bin/env bash
# Issue 16, sixth measures, the last call (repo root, $OUT set, wheelhouse/ built): the step benchmarks and the
# one-GPU cell on this stop's final source (the import hook and the byte-compiling installer included).
set -uo pipefail
: "${OUT:?set OUT to the folder for the results}"
source docs/results/h100/issue16/install_and_bench.sh
start=$(date +%s)
python3 -m nox -s "gpu(devices=1, precision='32')" > "$OUT/gpu-cell.log" 2>&1
echo "gpu cell rc=$? in $(( $(date +%s) - start )) s" | tee -a "$OUT/gpu-cell.log"
cp results/gpu/d1-32/summary.json "$OUT/summary-d1-32.json" 2>/dev/null
grep -o '"test_accuracy": [0-9.]*' "$OUT/gpu-cell.log" | tail -1
el done
