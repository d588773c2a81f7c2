#!/usr/bin/env bash
# Issue 16, ninth measures (repo root, the unit session's venv installed: `nox -s unit --install-only`):
#     bash docs/results/cpu/issue16/ninth/run.sh MNIST_DIR OUT_DIR
# Two alternating rounds of timed_parts.py on the megatron b128 step and on the raw loop (1 torch thread each, as
# the step benchmark runs them); the TIMED and closing lines of each go to OUT_DIR/timed-{megatron,raw}-ROUND.txt.
set -euo pipefail
data=$1 out=$2; mkdir -p "$out"
py=.nox/unit/bin/python; here=docs/results/cpu/issue16/ninth
for round in 1 2; do
  for mode in megatron raw; do
    steps=$([[ $mode == megatron ]] && echo 1500 || echo 3000)
    rm -rf "/tmp/ninth-run-$mode"
    PYTHONPATH=src $py $here/timed_parts.py $mode --batch 128 --steps "$steps" --warmup 30 --accelerator cpu \
      --data-dir "$data" --out "/tmp/ninth-$mode.json" --run-dir "/tmp/ninth-run-$mode" 2>&1 \
      | grep -E "^TIMED|ms/step" > "$out/timed-$mode-$round.txt"
  done
done
