#!/usr/bin/env bash
# Issue 16, seventh measures on one GPU (repo root, $OUT set, wheelhouse/ built by `nox -s wheelhouse -- --python 3.12`):
#     bash docs/results/h100/issue16/seventh/run.sh
# The megatron step with and without megatron-core's full-iteration CUDA graph (graph_runner.py), and the raw loop,
# at b128 and b8192, on the same warm GPU; the last logged training loss of each megatron run. RUNNERS="SCRIPT:MODE ..."
# picks some of them.
set -uo pipefail
: "${OUT:?set OUT to the folder for the results}"
source docs/results/h100/issue16/install.sh
R=docs/results/h100/issue16/seventh
for batch in 128 8192; do
  steps=$([[ $batch == 128 ]] && echo 300 || echo 100); warm=$([[ $batch == 128 ]] && echo 30 || echo 20)
  for runner in ${RUNNERS:-benchmarks/step_runner.py:raw $R/graph_runner.py:megatron benchmarks/step_runner.py:megatron}; do
    script=${runner%%:*} mode=${runner##*:}; name=$(basename $script .py)${GRAPH:+-graph$GRAPH}-$mode-b$batch; rm -rf /tmp/g-run
    python3 $script $mode --batch $batch --steps $steps --warmup $warm --accelerator gpu \
      --data-dir /tmp/mnist --out "$OUT/$name.json" --run-dir /tmp/g-run > /tmp/$name.log 2>&1
    echo "rc=$?" >> /tmp/$name.log; cp /tmp/$name.log "$OUT/" 2>/dev/null; grep -E "^LOSS|^GRAPH|raised" /tmp/$name.log
    python3 -c "import json; d = json.load(open('$OUT/$name.json')); print('$name min %.3f p25 %.3f median %.3f ms first_step %s' % (d['min_ms'], d['p25_ms'], d['median_ms'], d['first_step_s']))" \
      || tail -30 /tmp/$name.log
    csv=$(find /tmp/g-run -name metrics.csv | head -1); [[ -n $csv ]] && { head -1 $csv; tail -2 $csv; }
    grep -i "cuda graph" /tmp/$name.log | head -3
  done
done
el done
