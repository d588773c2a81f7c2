#!/bin/bash
# The framework's per-step floor on this CPU: the megatron and raw step loops at batch 1 (math next to nothing) and at
# batch 128, alternating, every bridge on. Run from the repo root.
ROUNDS=${ROUNDS:-2}
for r in $(seq "$ROUNDS"); do
  for mode in megatron raw; do
    for b in 1 128; do
      d=/tmp/prof/floor-$mode-$b-$r; rm -rf "$d"; mkdir -p "$d"
      timeout 600 .nox/unit/bin/python benchmarks/step_runner.py $mode --batch $b --steps 400 --warmup 30 \
        --accelerator cpu --data-dir ~/.cache/bionemo --out "$d/r.json" --run-dir "$d/run" > "$d/log" 2>&1
      python3 -c "import json;r=json.load(open('$d/r.json'));print('$mode b$b round $r: min %.3f p25 %.3f median %.3f ms' % (r['min_ms'], r['p25_ms'], r['median_ms']))"
    done
  done
done
