#!/usr/bin/env bash
# Issue 16 on one GPU, in one call (from the repo root, $OUT set, wheelhouse/ built by
# `nox -s wheelhouse -- --python 3.12`, OLD_TREE = `git archive <commit> src benchmarks` inside the checkout):
#   bash docs/results/h100/issue16/run.sh OLD_TREE
# 1. the step benchmarks (raw and megatron, b128 and b8192) of this checkout, and summarize.py's ratios;
# 2. the megatron b128 step of OLD_TREE and of this checkout, one after the other on the same warm GPU
#    (docs/results/h100x2/ab_step.sh with 1 device, 1 round).
# This checkout's src/ goes first on PYTHONPATH, before the dependencies installed from the wheelhouse.
set -uo pipefail
: "${OUT:?set OUT to the folder for the results}"
OLD=$1
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
bash tools/install_wheelhouse.sh wheelhouse/ > /tmp/install.log 2>&1 || { tail -20 /tmp/install.log; exit 1; }
nvidia-smi -L
export PYTHONPATH=$PWD/src:/tmp/site PATH=/tmp/site/bin:$PATH
python3 -c "import bionemo.example_model as m, torch; print(m.__file__, torch.__version__)"
el installed
mkdir -p benchmarks/results
pytest benchmarks/test_step_bench.py -p no:cacheprovider --basetemp=/tmp/pb-$$ \
  --benchmark-json benchmarks/results/benchmark.json > "$OUT/bench.log" 2>&1; echo "pytest rc=$?" >> "$OUT/bench.log"
python3 benchmarks/summarize.py >> "$OUT/bench.log" 2>&1
cp benchmarks/results/latest.json "$OUT/bench-latest.json" 2>/dev/null
el "bench: $(grep -E 'passed|failed' "$OUT/bench.log" | tail -1)"
grep -A12 '"ratios"' "$OUT/bench-latest.json"
PYTHONPATH=/tmp/site bash docs/results/h100x2/ab_step.sh "$OLD" 1 1
el done
