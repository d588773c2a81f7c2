#!/usr/bin/env bash
# Issue 16, fifth measures on one GPU (repo root, $OUT set, wheelhouse/ built by `nox -s wheelhouse -- --python 3.12`):
#     bash docs/results/h100/issue16/fifth/floor.sh
# The framework's per-step floor: the megatron and raw step loops at batch 1 (next to no math) and batch 128,
# alternating, 2 rounds, on the same warm GPU, every bridge on.
set -uo pipefail
: "${OUT:?set OUT to the folder for the results}"
source docs/results/h100/issue16/install.sh
for round in 1 2; do
  for mode in megatron raw; do
    for batch in 1 128; do
      name=$mode-b$batch-$round; rm -rf /tmp/floor-run
      python3 benchmarks/step_runner.py $mode --batch $batch --steps 300 --warmup 30 --accelerator gpu \
        --data-dir /tmp/mnist --out "$OUT/$name.json" --run-dir /tmp/floor-run > "$OUT/$name.log" 2>&1
      python3 -c "import json; d = json.load(open('$OUT/$name.json')); print('$name min %.3f p25 %.3f median %.3f ms' % (d['min_ms'], d['p25_ms'], d['median_ms']))"
    done
  done
done
el done
