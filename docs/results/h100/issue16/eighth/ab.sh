#!/usr/bin/env bash
# Issue 16, eighth measures: the compacting cycle-walk in sampling.py against the one before it (an untracked
# ab_before_sampling.py at the repo root: `git show 00d72e0:src/bionemo/example_model/sampling.py`), on one GPU:
# the stock megatron step (step_runner.py) at b8192 and b128 with each, alternating, and the raw loop at b8192 (it
# reads no sampling.py) once a round. Repo root, $OUT set, wheelhouse/ built:
#     bash docs/results/h100/issue16/eighth/ab.sh   (ROUNDS=2; BATCHES="8192 128": the megatron runs; TAG: ab$TAG.txt)
set -uo pipefail
: "${OUT:?set OUT to the folder for the results}"
source docs/results/h100/issue16/install.sh
rm -rf /tmp/before && cp -r src /tmp/before && cp ab_before_sampling.py /tmp/before/bionemo/example_model/sampling.py
for round in $(seq "${ROUNDS:-2}"); do
  for tree in before after; do
    src=$([[ $tree == before ]] && echo /tmp/before || echo "$PWD/src")
    runs=""; for b in ${BATCHES:-8192 128}; do runs+=" megatron:$b:300:$([[ $b == 128 ]] && echo 30 || echo 20)"; done
    [[ $tree == before ]] && runs="raw:8192:300:20 $runs"
    for run in $runs; do
      IFS=: read -r mode batch steps warm <<< "$run"; name=$tree-$mode-b$batch-r$round; rm -rf /tmp/ab-run
      PYTHONPATH=$src:/tmp/site python3 benchmarks/step_runner.py "$mode" --batch "$batch" --steps "$steps" \
        --warmup "$warm" --accelerator gpu --data-dir /tmp/mnist --out "/tmp/$name.json" --run-dir /tmp/ab-run \
        > "/tmp/$name.log" 2>&1 || tail -20 "/tmp/$name.log"
      echo "$name: $(grep -E "^$mode b$batch: min" "/tmp/$name.log")"
    done
  done
done | tee "$OUT/ab${TAG:-}.txt"
el done
