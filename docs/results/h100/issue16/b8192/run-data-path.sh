#!/usr/bin/env bash
# Issue 16, the consecutive-run data path (MnistResampler slices the epoch order on the device), in one call (repo
# root, $OUT set, wheelhouse/ built; OLD_TREE = `git archive 5afb995 src benchmarks` unpacked inside the checkout):
#   bash docs/results/h100/issue16/b8192/run-data-path.sh OLD_TREE
# 1. the step benchmarks (raw and megatron, b128 and b8192) of this checkout, and summarize.py's ratios;
# 2. `step_runner.py megatron --batch 8192` of this checkout and of OLD_TREE, alternating, 2 rounds, same warm GPU.
set -uo pipefail
: "${OUT:?set OUT to the folder for the results}"
OLD=$(cd "$1" && pwd) || exit 1
source docs/results/h100/issue16/install_and_bench.sh
for round in 1 2; do
  order=("$PWD new" "$OLD old"); ((round % 2)) || order=("$OLD old" "$PWD new")
  for side in "${order[@]}"; do
    read -r tree name <<< "$side"
    rm -rf /tmp/ab-run
    PYTHONPATH=$tree/src:/tmp/site python3 "$tree/benchmarks/step_runner.py" megatron --batch 8192 --steps 200 \
      --warmup 20 --accelerator gpu --data-dir /tmp/mnist --out "$OUT/ab-$name-$round.json" --run-dir /tmp/ab-run \
      > "/tmp/ab-$name-$round.log" 2>&1 || tail -20 "/tmp/ab-$name-$round.log"
    python3 -c "import json; d = json.load(open('$OUT/ab-$name-$round.json')); print('$name', $round, *(f'{k} {d[k]:.2f}' for k in ('median_ms', 'mean_ms', 'min_ms')))"
  done
done
el done
