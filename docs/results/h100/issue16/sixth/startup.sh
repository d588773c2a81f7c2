#!/usr/bin/env bash
# Issue 16, sixth measures: where the GPU node's first training step goes (40-46 s on an H100 against ~18 s on the
# 2-core CPU), in one call (repo root, $OUT set, wheelhouse/ built):   bash docs/results/h100/issue16/sixth/startup.sh
# 1. importing the training module, 2 runs, then once under -X importtime;
# 2. the same after byte-compiling the installed packages (the installer's --no-compile leaves none);
# 3. a 5-step megatron run of step_runner.py under cProfile: cumulative and own time of the start-up.
set -uo pipefail
: "${OUT:?set OUT to the folder for the results}"
source docs/results/h100/issue16/install.sh
imports() { for i in 1 2; do /usr/bin/time -f "$1: import bionemo.example_model.train %e s" \
  python3 -c "import bionemo.example_model.train" 2>&1 | grep "s$" | tail -1; done; }
imports "no .pyc" | tee "$OUT/import-times.txt"
python3 -X importtime -c "import bionemo.example_model.train" 2> "$OUT/importtime-train.txt" > /dev/null
start=$(date +%s); python3 -m compileall -q -j 16 /tmp/site > /dev/null 2>&1
echo "compileall /tmp/site: $(( $(date +%s) - start )) s" | tee -a "$OUT/import-times.txt"
imports "with .pyc" | tee -a "$OUT/import-times.txt"
python3 benchmarks/step_runner.py megatron --batch 128 --steps 5 --warmup 0 --accelerator gpu --data-dir /tmp/mnist \
  --out "$OUT/first-step.json" --run-dir /tmp/fs-run > "$OUT/first-step.log" 2>&1
python3 -c "import json; print('first_step_s with .pyc, no profiler:', round(json.load(open('$OUT/first-step.json'))['first_step_s'], 1))" | tee -a "$OUT/import-times.txt"
python3 -m cProfile -o /tmp/startup.prof benchmarks/step_runner.py megatron --batch 128 --steps 5 --warmup 0 \
  --accelerator gpu --data-dir /tmp/mnist --out "$OUT/profiled.json" --run-dir /tmp/prof-run > "$OUT/profiled.log" 2>&1
python3 - "$OUT" <<'PY'
import pstats, sys
out = sys.argv[1]
with open(f"{out}/startup-profile.txt", "w") as f:
    stats = pstats.Stats("/tmp/startup.prof", stream=f)
    stats.sort_stats("cumulative").print_stats(120)
    stats.sort_stats("tottime").print_stats(50)
PY
el done
