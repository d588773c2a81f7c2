#!/bin/bash
# alternating A/B of the CPU b128 step: on 2 ranks (--devices 2), this tree (new) against 6dfb7df (old)
cd /work/main
run() { # side round
  local src=$1 tag=$2 r=$3
  local d=/tmp/prof/dp2-$tag-$r
  rm -rf $d; mkdir -p $d
  PYTHONPATH=$src/src timeout 600 .nox/unit/bin/python $src/benchmarks/step_runner.py megatron --batch 128 --devices 2 --steps 120 --warmup 20 --accelerator cpu --data-dir ~/.cache/bionemo --out $d/r.json --run-dir $d/run > $d/log 2>&1
  python3 -c "import json;r=json.load(open('$d/r.json'));print('$tag', $r, 'median %.2f min %.2f' % (r['median_ms'], r['min_ms']))"
}
for r in 1 2 3; do
  if [ $((r % 2)) = 1 ]; then run /work/main new $r; run /tmp/oldtree old $r; else run /tmp/oldtree old $r; run /work/main new $r; fi
done
