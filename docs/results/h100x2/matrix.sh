#!/usr/bin/env bash
# Issue 13: the four `nox -s gpu` cells and the benchmarks on one nvidia-h100-x2, in calls of under 600 s each
# (from the repo root, $OUT set, wheelhouse/ built by `nox -s wheelhouse -- --python 3.12`):
#   bash docs/results/h100x2/matrix.sh cells        # d1-32 and d1-bf16-mixed side by side (one GPU each), d2-bf16-mixed
#   bash docs/results/h100x2/matrix.sh d2-32 KEXPR  # the devices=2 fp32 cell with pytest's -k narrowed to KEXPR
#   bash docs/results/h100x2/matrix.sh bench        # pytest benchmarks with both GPUs visible, then summarize.py
# The devices=2 fp32 cell takes ~620 s whole (five 2-GPU runs of ~40-70 s each, mostly imports, plus its pipeline),
# more than one call may run, so it is run in two parts whose -k together select every test of the cell.
set -uo pipefail
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 PYTHONDONTWRITEBYTECODE=1
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
if [[ ! -x /tmp/site/bin/bionemo-mnist ]]; then  # a machine still warm from the last call keeps its install
  bash tools/install_wheelhouse.sh wheelhouse/ > /tmp/install.log 2>&1 || { tail -20 /tmp/install.log; exit 1; }
fi
export PYTHONPATH=/tmp/site PATH=/tmp/site/bin:$PATH
nvidia-smi -L; python3 -c "import torch, numpy; print(torch.__version__, numpy.__version__, torch.cuda.device_count())"
el installed
cell() {  # cell DEVICES PRECISION [pytest args...]: one nox gpu cell, its log, JUnit and summary to $OUT
  local d=$1 p=$2 name=d$1-$2; shift 2
  nox -s "gpu(devices=$d, precision='$p')" -- -p no:cacheprovider --basetemp=/tmp/pt-$name-$$ -v "$@" \
    > "$OUT/nox-$name${PART:+-$PART}.log" 2>&1
  echo "nox rc=$?" >> "$OUT/nox-$name${PART:+-$PART}.log"
  cp results/gpu/$name/junit.xml "$OUT/junit-$name${PART:+-$PART}.xml" 2>/dev/null
  cp results/gpu/$name/summary.json "$OUT/summary-$name${PART:+-$PART}.json" 2>/dev/null
  el "$name${PART:+ ($PART)}: $(tail -1 "$OUT/nox-$name${PART:+-$PART}.log")"
}
case "$1" in
  cells)
    CUDA_VISIBLE_DEVICES=0 cell 1 32 & A=$!
    CUDA_VISIBLE_DEVICES=1 MASTER_PORT=29533 cell 1 bf16-mixed & B=$!
    wait $A $B
    cell 2 bf16-mixed ;;
  d2-32)
    PART=$(echo "$2" | tr -c 'a-z0-9\n' '_') cell 2 32 -k "$2" ;;
  bench)
    mkdir -p benchmarks/results
    pytest benchmarks -p no:cacheprovider --basetemp=/tmp/pb-$$ --benchmark-json benchmarks/results/benchmark.json \
      > "$OUT/bench.log" 2>&1; echo "pytest rc=$?" >> "$OUT/bench.log"
    python3 benchmarks/summarize.py >> "$OUT/bench.log" 2>&1
    cp benchmarks/results/latest.json "$OUT/bench-latest.json"
    el "bench: $(grep -E 'passed|failed' "$OUT/bench.log" | tail -1)" ;;
esac
cat "$OUT"/summary-*.json 2>/dev/null
