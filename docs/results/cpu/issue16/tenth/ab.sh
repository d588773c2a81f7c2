#!/usr/bin/env bash
# Issue 16, tenth measures (repo root, `nox -s unit --install-only` done): the CPU b128 step of this tree against the
# tree before it, alternating, ROUNDS rounds of STEPS steps; then, TIMED=1, the ninth measures' timed_parts.py on
# each (two alternating rounds). BEFORE is a copy of src/ at e7b79d0 (`git archive e7b79d0 src | tar -x -C /tmp/e7`
# gives /tmp/e7/src).
#     BEFORE=/tmp/e7/src bash docs/results/cpu/issue16/tenth/ab.sh MNIST_DIR OUT_DIR
set -uo pipefail
data=$1 out=$2; mkdir -p "$out"
: "${BEFORE:?set BEFORE to a copy of src/ at e7b79d0}"
py=.nox/unit/bin/python
tree_src() { [[ $1 == before ]] && echo "$BEFORE" || echo "$PWD/src"; }
for r in $(seq "${ROUNDS:-3}"); do
  order="before after"; [ $((r % 2)) = 0 ] && order="after before"
  for tree in $order; do
    d=/tmp/tenth-ab/$tree-$r; rm -rf "$d"; mkdir -p "$d"
    PYTHONPATH=$(tree_src "$tree") timeout 600 $py benchmarks/step_runner.py megatron --batch 128 \
      --steps "${STEPS:-600}" --warmup 30 --accelerator cpu --data-dir "$data" --out "$d/r.json" --run-dir "$d/run" \
      > "$d/log" 2>&1 || tail -5 "$d/log"
    echo "$tree round $r: $(grep -E "^megatron b128: min" "$d/log")"
  done
done | tee "$out/ab.txt"
[[ ${TIMED:-0} == 1 ]] || exit 0
for r in 1 2; do
  order="before after"; [ $((r % 2)) = 0 ] && order="after before"
  for tree in $order; do
    rm -rf /tmp/tenth-ab/timed-run
    PYTHONPATH=$(tree_src "$tree") $py docs/results/cpu/issue16/ninth/timed_parts.py megatron --batch 128 --steps 800 \
      --warmup 30 --accelerator cpu --data-dir "$data" --out /tmp/tenth-ab/timed.json \
      --run-dir /tmp/tenth-ab/timed-run 2>&1 | grep -E "^TIMED|ms/step" > "$out/timed-$tree-$r.txt"
  done
done
