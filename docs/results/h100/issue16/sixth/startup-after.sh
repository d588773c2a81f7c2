#!/usr/bin/env bash
# Issue 16, sixth measures: the GPU node's start-up after this stop's two changes, in one call (repo root, $OUT set,
# wheelhouse/ built):   bash docs/results/h100/issue16/sixth/startup-after.sh
# - the install, now byte-compiling (tools/install_wheelhouse.sh without --no-compile): its time;
# - importing the training module and a 5-step megatron run's first_step_s, alternating the unified-memory import hook
#   on and off (BIONEMO_BRIDGE_SKIP=unified_memory_not_built_at_import), 2 rounds; then -X importtime with it on.
set -uo pipefail
: "${OUT:?set OUT to the folder for the results}"
source docs/results/h100/issue16/install.sh
echo "install from the wheelhouse, byte-compiling: $(( $(date +%s) - T0 )) s" | tee "$OUT/install.txt"
HOOK=unified_memory_not_built_at_import
measure() { # tag skip round
  local t0; t0=$(date +%s.%N)
  BIONEMO_BRIDGE_SKIP=$2 python3 -c "import bionemo.example_model.train" > /dev/null 2>&1
  local imported; imported=$(python3 -c "print(round($(date +%s.%N) - $t0, 1))")
  rm -rf /tmp/fs-run
  BIONEMO_BRIDGE_SKIP=$2 python3 benchmarks/step_runner.py megatron --batch 128 --steps 5 --warmup 0 --accelerator gpu \
    --data-dir /tmp/mnist --out "$OUT/first-step-$1-$3.json" --run-dir /tmp/fs-run > "$OUT/first-step-$1-$3.log" 2>&1
  python3 -c "import json; print('hook $1, round $3: import $imported s, first_step_s', round(json.load(open('$OUT/first-step-$1-$3.json'))['first_step_s'], 1))"
}
for round in 1 2; do
  if [ "$round" = 1 ]; then measure on "" 1; measure off $HOOK 1; else measure off $HOOK 2; measure on "" 2; fi
done | tee "$OUT/startup-after.txt"
python3 -X importtime -c "import bionemo.example_model.train" 2> "$OUT/importtime-after.txt" > /dev/null
gzip -f "$OUT/importtime-after.txt"
el done
