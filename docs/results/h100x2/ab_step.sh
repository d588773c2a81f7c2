#!/usr/bin/env bash
# Issue 15: is the 2-GPU step slower at this commit than at an older one, or was the other machine slower?
# Runs benchmarks/step_runner.py (megatron, batch 128 per rank, the benchmark's 100 steps / 20 warm-up) for two
# source trees in turn on ONE warm machine, so both see the same GPUs, host and NCCL:
#   bash docs/results/h100x2/ab_step.sh OLD_TREE ROUNDS DEVICES
# OLD_TREE: `git archive <commit> src benchmarks | tar -x -C OLD_TREE`, inside the checkout so that it travels to the
# device (untracked, not ignored). Each side's src/ is put before the dependencies installed from wheelhouse/ (as
# matrix.sh installs them), so each side runs its own package and its own runner; "new" is this checkout. Each round
# runs new then old, and the next round old then new, so a drift of the machine over time favours neither. Writes
# $OUT/ab-*.json.
set -uo pipefail
: "${OUT:?set OUT to the folder for the results}"
OLD=$(cd "$1" && pwd) || exit 1; ROUNDS=${2:-3}; DEVICES=${3:-2}
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 PYTHONDONTWRITEBYTECODE=1
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
if [[ ! -x /tmp/site/bin/bionemo-mnist ]]; then
  bash tools/install_wheelhouse.sh wheelhouse/ > /tmp/install.log 2>&1 || { tail -20 /tmp/install.log; exit 1; }
else
  echo "/tmp/site kept from an earlier call"
fi
nvidia-smi -L
el installed
PYTHONPATH=/tmp/site python3 -c "from bionemo.example_model.mnist_files import ensure_mnist as e; e('/tmp/mnist', allow_download=False)" || exit 1
one() {  # one TREE NAME: a step_runner run of TREE's package and runner
  local tree=$1 name=$2
  rm -rf "/tmp/ab-run-$name"  # a machine still warm from an earlier call keeps it: the run would resume a finished run
  PYTHONPATH=$tree/src:/tmp/site python3 "$tree/benchmarks/step_runner.py" megatron --batch 128 --steps 100 --warmup 20 \
    --accelerator gpu --devices "$DEVICES" --data-dir /tmp/mnist --out "$OUT/ab-$name.json" \
    --run-dir "/tmp/ab-run-$name" > "/tmp/ab-$name.log" 2>&1 || { tail -30 "/tmp/ab-$name.log"; return 1; }
  el "$name: $(python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(*(f'{k}={r[k]:.2f}' for k in ('median_ms','p25_ms','min_ms')))" "$OUT/ab-$name.json")"
}
for tree in "$PWD" "$OLD"; do  # which package each side imports
  PYTHONPATH=$tree/src:/tmp/site python3 -c "import bionemo.example_model as m; print(m.__file__)"
done
for ((i = 1; i <= ROUNDS; i++)); do
  if ((i % 2)); then one "$PWD" "new-d$DEVICES-$i"; one "$OLD" "old-d$DEVICES-$i"
  else one "$OLD" "old-d$DEVICES-$i"; one "$PWD" "new-d$DEVICES-$i"; fi
done
