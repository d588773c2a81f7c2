#!/bin/bash
# Alternating A/B of the CPU b128 step in one tree: every bridge on, against the same tree with $BRIDGE (default
# `cuda_free_calls_outside_the_cpu_mode`) switched off (BIONEMO_BRIDGE_SKIP). Run from the repo root.
ROUNDS=${ROUNDS:-3} BRIDGE=${BRIDGE:-cuda_free_calls_outside_the_cpu_mode}
run() { # tag skip round
  local d=/tmp/prof/$BRIDGE-$1-$3
  rm -rf "$d"; mkdir -p "$d"
  BIONEMO_BRIDGE_SKIP=$2 timeout 600 .nox/unit/bin/python benchmarks/step_runner.py megatron --batch 128 --steps 400 \
    --warmup 30 --accelerator cpu --data-dir ~/.cache/bionemo --out "$d/r.json" --run-dir "$d/run" > "$d/log" 2>&1
  python3 -c "import json;r=json.load(open('$d/r.json'));print('$1 round $3: min %.2f p25 %.2f median %.2f ms' % (r['min_ms'], r['p25_ms'], r['median_ms']))"
}
for r in $(seq "$ROUNDS"); do
  if [ $((r % 2)) = 1 ]; then run on "" "$r"; run off "$BRIDGE" "$r"
  else run off "$BRIDGE" "$r"; run on "" "$r"; fi
done
