#!/usr/bin/env bash
# Issue 16, tenth measures: the b128 step with each microbatch's loss computed once (this tree) against twice (the tree
# before it: untracked ab_before_module.py and ab_before_losses.py at the repo root, `git show e7b79d0:src/...`), on
# one GPU, alternating; then the step benchmarks (../bench.sh). Repo root, $OUT set, wheelhouse/ built:
#     bash docs/results/h100/issue16/tenth/ab.sh   (ROUNDS=3)
set -uo pipefail
: "${OUT:?set OUT to the folder for the results}"
source docs/results/h100/issue16/install.sh
rm -rf /tmp/before && cp -r src /tmp/before
cp ab_before_module.py /tmp/before/bionemo/example_model/module.py
cp ab_before_losses.py /tmp/before/bionemo/example_model/losses.py
for round in $(seq "${ROUNDS:-3}"); do
  order="before after"; [ $((round % 2)) = 0 ] && order="after before"
  for tree in $order; do
    src=$([[ $tree == before ]] && echo /tmp/before || echo "$PWD/src"); name=$tree-b128-r$round; rm -rf /tmp/ab-run
    PYTHONPATH=$src:/tmp/site python3 benchmarks/step_runner.py megatron --batch 128 --steps 600 --warmup 30 \
      --accelerator gpu --data-dir /tmp/mnist --out "/tmp/$name.json" --run-dir /tmp/ab-run > "/tmp/$name.log" 2>&1 \
      || tail -20 "/tmp/$name.log"
    echo "$name: $(grep -E "^megatron b128: min" "/tmp/$name.log")"
  done
done | tee "$OUT/ab.txt"
el "a/b done"
source docs/results/h100/issue16/bench.sh
el done
