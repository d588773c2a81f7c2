#!/usr/bin/env bash
# Issue 16, sixth measures on one GPU, in one call (repo root, $OUT set, wheelhouse/ built by
# `nox -s wheelhouse -- --python 3.12`):   bash docs/results/h100/issue16/sixth/run.sh
# 1. install from the wheelhouse; the bridged all-reduce against upstream's over one-member NCCL groups (every op and
#    dtype, alone and coalesced), then what one such call costs the host, upstream vs bridged (one_member_bench.py);
# 2. the step benchmarks (raw and megatron, b128 and b8192) and summarize.py's ratios;
# 3. the one-GPU cell, `nox -s "gpu(devices=1, precision='32')"`: gpu-marked tests and a 500 + 1000 step pipeline.
set -uo pipefail
: "${OUT:?set OUT to the folder for the results}"
source docs/results/h100/issue16/install.sh
python3 docs/results/cpu/issue16/sixth/one_member_bench.py --backend nccl --check > "$OUT/one-member-bench.txt" 2>&1
echo "one_member_bench rc=$?" >> "$OUT/one-member-bench.txt"; grep -v Warning "$OUT/one-member-bench.txt" | tail -7
el "one-member bench"
source docs/results/h100/issue16/bench.sh
start=$(date +%s)
python3 -m nox -s "gpu(devices=1, precision='32')" > "$OUT/gpu-cell.log" 2>&1
echo "gpu cell rc=$? in $(( $(date +%s) - start )) s" | tee -a "$OUT/gpu-cell.log"
cp results/gpu/d1-32/summary.json "$OUT/summary-d1-32.json" 2>/dev/null
grep -o '"test_accuracy": [0-9.]*' "$OUT/gpu-cell.log" | tail -1
el done
