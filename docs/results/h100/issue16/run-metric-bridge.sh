#!/usr/bin/env bash
# Issue 16, the `result_metric_to_same_device` bridge on one GPU, in one call (from the repo root, $OUT set,
# wheelhouse/ built by `nox -s wheelhouse -- --python 3.12`):
#   bash docs/results/h100/issue16/run-metric-bridge.sh
# 1. the step benchmarks (raw and megatron, b128 and b8192) of this checkout, and summarize.py's ratios;
# 2. `step_runner.py megatron --batch 128` with the bridge on and off (BIONEMO_BRIDGE_SKIP), alternating, 2 rounds,
#    on the same warm GPU.
set -uo pipefail
: "${OUT:?set OUT to the folder for the results}"
source docs/results/h100/issue16/install_and_bench.sh
for round in 1 2; do
  for bridge in on off; do
    skip=""; [ "$bridge" = off ] && skip=result_metric_to_same_device
    rm -rf /tmp/ab-run
    BIONEMO_BRIDGE_SKIP=$skip python3 benchmarks/step_runner.py megatron --batch 128 --steps 300 --warmup 30 \
      --accelerator gpu --data-dir /tmp/mnist --out "$OUT/ab-$bridge-$round.json" --run-dir /tmp/ab-run \
      > "$OUT/ab-$bridge-$round.log" 2>&1
    python3 -c "import json; d = json.load(open('$OUT/ab-$bridge-$round.json')); print('$bridge', $round, 'median', round(d['median_ms'], 2), 'min', round(d['min_ms'], 2))"
  done
done
el done
