#!/usr/bin/env bash
# Issue 16, fourth measures on one GPU, in one call (repo root, $OUT set, wheelhouse/ built by
# `nox -s wheelhouse -- --python 3.12`):   bash docs/results/h100/issue16/fourth/run.sh
# 1. the step benchmarks (raw and megatron, b128 and b8192) and summarize.py's ratios (install_and_bench.sh);
# 2. `step_runner.py megatron --batch 128` with this session's three all-device bridges on and off
#    (BIONEMO_BRIDGE_SKIP), alternating, 2 rounds, on the same warm GPU. (The CPU bridge's change does not run here.)
set -uo pipefail
: "${OUT:?set OUT to the folder for the results}"
NEW_BRIDGES=one_logger_level_set_once,log_reads_training_step_signature_once,megatron_callbacks_read_signatures_once
source docs/results/h100/issue16/install_and_bench.sh
for order in "on off" "off on"; do
  round=$([ "$order" = "on off" ] && echo 1 || echo 2)
  for bridges in $order; do
    skip=""; [ "$bridges" = off ] && skip=$NEW_BRIDGES
    rm -rf /tmp/ab-run
    BIONEMO_BRIDGE_SKIP=$skip python3 benchmarks/step_runner.py megatron --batch 128 --steps 300 --warmup 30 \
      --accelerator gpu --data-dir /tmp/mnist --out "$OUT/ab-$bridges-$round.json" --run-dir /tmp/ab-run \
      > "$OUT/ab-$bridges-$round.log" 2>&1
    python3 -c "import json; d = json.load(open('$OUT/ab-$bridges-$round.json')); print('$bridges', $round, 'median', round(d['median_ms'], 2), 'min', round(d['min_ms'], 2))"
  done
done
el done
