#!/usr/bin/env bash
# Issue 16, eighth measures, call 5: on the GPU node, the epoch order before and after the compacting cycle-walk
# (epoch_order_bench.py), and py-spy (--nonblocking) of the graphed b8192 step with the new sampling.py and with
# 00d72e0's (ab_before_sampling.py, untracked, at the repo root), new first. Repo root, $OUT set, wheelhouse/ built
# with py-spy's wheel added:
#     bash docs/results/h100/issue16/eighth/after.sh
set -uo pipefail
: "${OUT:?set OUT to the folder for the results}"
source docs/results/h100/issue16/install.sh
R=docs/results/h100/issue16
rm -rf /tmp/before && cp -r src /tmp/before && cp ab_before_sampling.py /tmp/before/bionemo/example_model/sampling.py
python3 $R/eighth/epoch_order_bench.py 2>&1 | grep "^n=" | tee "$OUT/epoch-order-node.txt"
for tree in after before; do
  src=$([[ $tree == before ]] && echo /tmp/before || echo "$PWD/src")
  name=pyspy-nb-$tree-graph1-b8192; rm -rf /tmp/g-run
  PYTHONPATH=$src:/tmp/site py-spy record --idle --nonblocking --format raw -r 250 -o /tmp/$name.raw -- \
    python3 $R/seventh/graph_runner.py megatron --batch 8192 --steps 2000 --warmup 30 --accelerator gpu \
    --data-dir /tmp/mnist --out "$OUT/$name.json" --run-dir /tmp/g-run > "$OUT/$name.log" 2>&1
  el "$name rc=$? $(grep -E '^GRAPH|raised' "$OUT/$name.log" | tr '\n' ' ')$(grep -E 'ms/step' "$OUT/$name.log")"
  gzip -c /tmp/$name.raw > "$OUT/$name.raw.gz"
done
el done
