#!/usr/bin/env bash
# Issue 16, ninth measures: a py-spy profile (sampling without pausing, idle frames kept) of the megatron b128 step
# on this CPU (repo root, `nox -s unit --install-only` done, MNIST in MNIST_DIR):
#     bash docs/results/cpu/issue16/ninth/profile.sh MNIST_DIR OUT_DIR
# then `python3 docs/results/h100/issue16/eighth/buckets.py OUT_DIR/pyspy-megatron-b128.raw.gz`.
set -euo pipefail
data=$1 out=$2; mkdir -p "$out"; rm -rf /tmp/ninth-profile-run
PYTHONPATH=src .nox/unit/bin/py-spy record --idle --nonblocking --format raw -r 250 -o /tmp/pyspy-megatron-b128.raw \
  -- .nox/unit/bin/python benchmarks/step_runner.py megatron --batch 128 --steps 3000 --warmup 30 --accelerator cpu \
  --data-dir "$data" --out "$out/pyspy-megatron-b128.json" --run-dir /tmp/ninth-profile-run 2>&1 | grep "ms/step"
gzip -c /tmp/pyspy-megatron-b128.raw > "$out/pyspy-megatron-b128.raw.gz"
