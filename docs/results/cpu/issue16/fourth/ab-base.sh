#!/bin/bash
# 1-rank and 2-rank CPU b128 steps: this tree (new) against c6d5856 (the cpu-2core baseline's commit)
cd /work/main
run() { # tree tag devices steps
  local src=$1 tag=$2 devices=$3 steps=$4
  local d=/tmp/prof/base-$tag-$devices
  rm -rf $d; mkdir -p $d
  PYTHONPATH=$src/src timeout 600 .nox/unit/bin/python $src/benchmarks/step_runner.py megatron --batch 128 --devices $devices --steps $steps --warmup 20 --accelerator cpu --data-dir ~/.cache/bionemo --out $d/r.json --run-dir $d/run > $d/log 2>&1
  python3 -c "import json;r=json.load(open('$d/r.json'));print('$tag devices $devices', 'median %.2f min %.2f' % (r['median_ms'], r['min_ms']))"
}
run /work/main new 1 300; run /tmp/basetree base 1 300; run /tmp/basetree base 2 120; run /work/main new 2 120
