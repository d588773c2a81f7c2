# Sourced by run.sh, run-metric-bridge.sh, b8192/run-data-path.sh, third/run-final.sh and fourth/run.sh (repo root,
# $OUT set, wheelhouse/ built): install.sh, then bench.sh.
source docs/results/h100/issue16/install.sh
source docs/results/h100/issue16/bench.sh
