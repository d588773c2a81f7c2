#!/usr/bin/env bash
# Issue 13, on 2 GPUs from the repo root: how often does a 2-GPU distributed-optimizer resume (micro 64, 10 -> 20
# steps) end off the uninterrupted run? Two uninterrupted runs (a, b) and four resumed ones (c-f), side by side.
set -uo pipefail
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 BIONEMO_TEST_LOG_EVERY_N_STEPS=1
bash tools/install_wheelhouse.sh wheelhouse/ >/tmp/install.log 2>&1 || exit 1
export PYTHONPATH=/tmp/site PATH=/tmp/site/bin:$PATH
rm -rf /tmp/[a-f] /tmp/[a-f].log.*
A="--accelerator gpu --devices 2 --micro-batch-size 64 --val-check-interval 10 --use-distributed-optimizer"
stage() { MASTER_PORT=$1 python3 tests/integration/run_stage.py cli pretrain $A --steps $2 --out $3 > $3.log.$2 2>&1 || { echo "FAILED $3 $2"; tail -20 $3.log.$2; }; }
stage 29601 20 /tmp/a & stage 29602 20 /tmp/b & for r in c d e f; do p=$((29610 + $(printf %d "'$r"))); (stage $p 10 /tmp/$r && stage $p 20 /tmp/$r) & done; wait
echo "runs done at $SECONDS s"
PYTHONPATH=tests:$PYTHONPATH python3 - <<'PY' 2>&1 | grep -v end.of.life
from pathlib import Path
import torch
from support.records import adam_steps, checkpoint_state, last_checkpoint, metric_by_step
runs = {r: last_checkpoint(Path(f"/tmp/{r}/pretrain")) for r in "abcdef"}
states = {r: checkpoint_state(c) for r, c in runs.items()}
for r, c in runs.items():
    print(r, c.name, "adam steps", adam_steps(c))
for x, y in (("a", "b"), *((r, "a") for r in "cdef")):
    lx, ly = (metric_by_step(Path(f"/tmp/{r}/pretrain/csv/metrics.csv"), "reduced_train_loss") for r in (x, y))
    print(f"{x} vs {y}: loss steps differing:", [s for s in ly if lx.get(s) != ly[s]])
    for k in states[y]:
        u, v = states[x][k].flatten(), states[y][k].flatten()
        d = (u != v).nonzero().flatten()
        if len(d):
            print(f"  {k}: {len(d)}/{u.numel()} differ, idx {d[0].item()}..{d[-1].item()}, "
                  f"max|diff| {(u - v).abs().max().item():.3g}, max|v| {v.abs().max().item():.3g}")
PY
