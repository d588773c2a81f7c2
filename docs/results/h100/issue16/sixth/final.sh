#!/usr/bin/env bash
# Issue 16, sixth measures, the last call (repo root, $OUT set, wheelhouse/ built), on this stop's final source (the
# all-reduce bridge at the process group, the import hook, the byte-compiling installer):
# 1. one_member_bench.py on NCCL, with the comparison against upstream first;
# 2. a 5-step megatron run's first_step_s;
# 3. the one-GPU cell, `nox -s "gpu(devices=1, precision='32')"`.
set -uo pipefail
: "${OUT:?set OUT to the folder for the results}"
source docs/results/h100/issue16/install.sh
python3 docs/results/cpu/issue16/sixth/one_member_bench.py --backend nccl --check 2>&1 | grep -v Warn | tee "$OUT/one-member-bench-final.txt"
python3 benchmarks/step_runner.py megatron --batch 128 --steps 5 --warmup 0 --accelerator gpu --data-dir /tmp/mnist \
  --out "$OUT/first-step-final.json" --run-dir /tmp/fs-run > /dev/null 2>&1
python3 -c "import json; print('first_step_s', round(json.load(open('$OUT/first-step-final.json'))['first_step_s'], 1))"
start=$(date +%s)
python3 -m nox -s "gpu(devices=1, precision='32')" > "$OUT/gpu-cell-final.log" 2>&1
echo "gpu cell rc=$? in $(( $(date +%s) - start )) s" | tee -a "$OUT/gpu-cell-final.log"
grep -o '"test_accuracy": [0-9.]*' "$OUT/gpu-cell-final.log" | tail -1
el done
