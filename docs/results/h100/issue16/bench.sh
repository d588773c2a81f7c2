# Sourced by install_and_bench.sh and sixth/run.sh (repo root, $OUT set, installed by install.sh): the step benchmarks
# (raw and megatron, b128 and b8192) and summarize.py's ratios into $OUT/bench.log and $OUT/bench-latest.json.
mkdir -p benchmarks/results
pytest benchmarks/test_step_bench.py -p no:cacheprovider --basetemp=/tmp/pb-$$ \
  --benchmark-json benchmarks/results/benchmark.json > "$OUT/bench.log" 2>&1; echo "pytest rc=$?" >> "$OUT/bench.log"
python3 benchmarks/summarize.py >> "$OUT/bench.log" 2>&1
cp benchmarks/results/latest.json "$OUT/bench-latest.json" 2>/dev/null
el "bench: $(grep -E 'passed|failed' "$OUT/bench.log" | tail -1)"
grep -A12 '"ratios"' "$OUT/bench-latest.json"
