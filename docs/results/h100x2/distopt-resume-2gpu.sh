#!/usr/bin/env bash
# Issue 13, one nvidia-h100-x2 call (from the repo root, $OUT set, wheelhouse/ built): a 2-GPU distributed-optimizer
# pipeline killed after pretrain's first checkpoint and rerun, against an uninterrupted one; beside them the devices=2
# fp32 cell's tests.
set -uo pipefail
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 PYTHONDONTWRITEBYTECODE=1
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
bash tools/install_wheelhouse.sh wheelhouse/ > /tmp/install.log 2>&1 || { tail -20 /tmp/install.log; exit 1; }
export PYTHONPATH=/tmp/site PATH=/tmp/site/bin:$PATH
nvidia-smi -L; python3 -c "import torch, numpy; print(torch.__version__, numpy.__version__, torch.cuda.device_count())"
el installed
FLAGS="--accelerator gpu --devices 2 --use-distributed-optimizer --pretrain-steps 1000 --finetune-steps 1000 --val-check-interval 250"
# the devices=2 fp32 cell's tests (DP equivalence; bitwise resume with torch's Adam and with the distributed optimizer)
( timeout 540 pytest tests/integration/test_gpu.py -m gpu -k "visible or (two_ranks and 32)" -p no:cacheprovider \
    --junitxml=$OUT/junit-d2-32-distopt.xml --timeout=900 --basetemp=/tmp/pt -v > $OUT/pytest-d2-32.log 2>&1;
  echo "pytest rc=$?" >> $OUT/pytest-d2-32.log ) &
PT=$!
( MASTER_PORT=29511 timeout 540 bionemo-mnist pipeline $FLAGS --out /tmp/u > /tmp/u.log 2>&1; echo "rc=$?" >> /tmp/u.log ) &
U=$!
setsid bash -c "MASTER_PORT=29522 exec bionemo-mnist pipeline $FLAGS --out /tmp/i" > /tmp/i1.log 2>&1 &
I=$!
for _ in $(seq 1 600); do
  ls /tmp/i/pretrain/checkpoints/*step=249*-last/context/io.json >/dev/null 2>&1 && break; sleep 0.5
done
sleep 2; el "killing the interrupted run (pgid $I) after: $(ls -d /tmp/i/pretrain/checkpoints/* 2>/dev/null | xargs -n1 basename | tr '\n' ' ')"
kill -9 -- -$I; wait $I 2>/dev/null
MASTER_PORT=29522 timeout 400 bionemo-mnist pipeline $FLAGS --out /tmp/i > /tmp/i2.log 2>&1; echo "rc=$?" >> /tmp/i2.log
el "resumed run done"; wait $U; el "uninterrupted run done"
{ echo "# interrupted run (SIGKILL after pretrain's first checkpoint), first part, tail:"; tail -5 /tmp/i1.log
  echo "# rerun:"; grep -i "restor\|resum" /tmp/i2.log | head -5; tail -8 /tmp/i2.log
  echo "# uninterrupted:"; tail -8 /tmp/u.log
  echo "# summaries"; cat /tmp/i/summary.json; echo; cat /tmp/u/summary.json; echo
  echo "# final checkpoints, resumed vs uninterrupted (max |diff| per tensor group)"
  PYTHONPATH=tests:$PYTHONPATH python3 - <<'PY'
from pathlib import Path
import torch
from support.records import adam_steps, checkpoint_state, last_checkpoint
for stage in ("pretrain", "finetune"):
    a, b = (last_checkpoint(Path(r) / stage) for r in ("/tmp/i", "/tmp/u"))
    sa, sb = checkpoint_state(a), checkpoint_state(b)
    same = sorted(sa) == sorted(sb)
    diff = {k: (sa[k].float() - sb[k].float()).abs().max().item() for k in sb} if same else {}
    equal = [k for k in sb if same and torch.equal(sa[k], sb[k])]
    print(stage, a.name, "keys equal:", same, f"bitwise-equal tensors {len(equal)}/{len(sb)}",
          "max|diff|", max(diff.values(), default=None), "adam steps", adam_steps(a), adam_steps(b))
PY
} > $OUT/distopt-resume-2gpu.txt 2>&1
cp /tmp/i1.log $OUT/interrupted-part1.log; cp /tmp/i2.log $OUT/interrupted-rerun.log; cp /tmp/u.log $OUT/uninterrupted.log
wait $PT; el "pytest done"; tail -15 $OUT/pytest-d2-32.log; cat $OUT/distopt-resume-2gpu.txt
