#!/usr/bin/env bash
# Issue 16, eighth measures on one GPU (repo root, $OUT set, wheelhouse/ built by `nox -s wheelhouse -- --python 3.12`
# with py-spy's wheel added):
#     bash docs/results/h100/issue16/eighth/profile.sh
# Where the megatron step's host time goes once megatron-core's full-iteration CUDA graph replays forward-backward
# (../seventh/graph_runner.py): py-spy samples (raw, idle frames kept, so host-device waits show) of the graphed
# and the stock step at b128 and of the graphed step at b8192, on the same warm GPU; buckets.py reads them off the
# node. RUNS="GRAPH:BATCH:STEPS ..." picks runs; PYSPY_FLAGS adds py-spy options (with any,
# the names say -nb: the runs used --nonblocking, which samples without pausing the process).
set -uo pipefail
: "${OUT:?set OUT to the folder for the results}"
source docs/results/h100/issue16/install.sh
R=docs/results/h100/issue16/seventh
for run in ${RUNS:-1:128:4000 0:128:3000 1:8192:2000}; do
  IFS=: read -r graph batch steps <<< "$run"; name=pyspy${PYSPY_FLAGS:+-nb}-graph$graph-b$batch; rm -rf /tmp/g-run
  GRAPH=$graph py-spy record --idle ${PYSPY_FLAGS:-} --format raw -r 250 -o /tmp/$name.raw -- \
    python3 $R/graph_runner.py megatron --batch $batch --steps $steps --warmup 30 --accelerator gpu \
    --data-dir /tmp/mnist --out "$OUT/$name.json" --run-dir /tmp/g-run > /tmp/$name.log 2>&1
  el "$name rc=$? $(grep -E '^GRAPH|raised' /tmp/$name.log | tr '\n' ' ')$(tail -1 /tmp/$name.log)"
  grep -E "^LOSS" /tmp/$name.log; gzip -c /tmp/$name.raw > "$OUT/$name.raw.gz"
done
el done
