# Sourced by run.sh and run-metric-bridge.sh (repo root, $OUT set, wheelhouse/ built): install from the wheelhouse
# into /tmp/site, put this checkout's src/ first on the path, prepare MNIST offline, then run the step benchmarks
# (raw and megatron, b128 and b8192) and summarize.py's ratios into $OUT/bench.log and $OUT/bench-latest.json.
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
bash tools/install_wheelhouse.sh wheelhouse/ > /tmp/install.log 2>&1 || { tail -20 /tmp/install.log; exit 1; }
nvidia-smi -L
export PYTHONPATH=$PWD/src:/tmp/site PATH=/tmp/site/bin:$PATH
python3 -c "import bionemo.example_model as m, torch; print(m.__file__, torch.__version__)"
python3 -c "from bionemo.example_model.mnist_files import ensure_mnist as e; e('/tmp/mnist', allow_download=False)"
el installed
mkdir -p benchmarks/results
pytest benchmarks/test_step_bench.py -p no:cacheprovider --basetemp=/tmp/pb-$$ \
  --benchmark-json benchmarks/results/benchmark.json > "$OUT/bench.log" 2>&1; echo "pytest rc=$?" >> "$OUT/bench.log"
python3 benchmarks/summarize.py >> "$OUT/bench.log" 2>&1
cp benchmarks/results/latest.json "$OUT/bench-latest.json" 2>/dev/null
el "bench: $(grep -E 'passed|failed' "$OUT/bench.log" | tail -1)"
grep -A12 '"ratios"' "$OUT/bench-latest.json"
