#!/bin/bash
# Alternating A/B of the CPU b128 step in one tree: every bridge on, against the same tree with
# `one_member_all_reduce_returns_at_once` switched off (BIONEMO_BRIDGE_SKIP). Run from the repo root.
ROUNDS=${ROUNDS:-3}
run() { # tag skip round
  local d=/tmp/prof/sixth-$1-$3
  rm -rf "$d"; mkdir -p "$d"
  BIONEMO_BRIDGE_SKIP=$2 timeout 600 .nox/unit/bin/python benchmarks/step_runner.py megatron --batch 128 --steps 400 \
    --warmup 30 --accelerator cpu --data-dir ~/.cache/bionemo --out "$d/r.json" --run-dir "$d/run" > "$d/log" 2>&1
  python3 -c "import json;r=json.load(open('$d/r.json'));print('$1 round $3: min %.2f p25 %.2f median %.2f ms' % (r['min_ms'], r['p25_ms'], r['median_ms']))"
}
for r in $(seq "$ROUNDS"); do
  if [ $((r % 2)) = 1 ]; then run on "" "$r"; run off one_member_all_reduce_returns_at_once "$r"
  else run off one_member_all_reduce_returns_at_once "$r"; run on "" "$r"; fi
done
