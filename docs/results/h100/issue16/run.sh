#!/usr/bin/env bash
# Issue 16 on one GPU, in one call (from the repo root, $OUT set, wheelhouse/ built by
# `nox -s wheelhouse -- --python 3.12`, OLD_TREE = `git archive <commit> src benchmarks` inside the checkout):
#   bash docs/results/h100/issue16/run.sh OLD_TREE
# 1. the step benchmarks (raw and megatron, b128 and b8192) of this checkout, and summarize.py's ratios;
# 2. the megatron b128 step of OLD_TREE and of this checkout, one after the other on the same warm GPU
#    (docs/results/h100x2/ab_step.sh with 1 device, 1 round).
# This checkout's src/ goes first on PYTHONPATH, before the dependencies installed from the wheelhouse.
set -uo pipefail
: "${OUT:?set OUT to the folder for the results}"
OLD=$1
source docs/results/h100/issue16/install_and_bench.sh
PYTHONPATH=/tmp/site bash docs/results/h100x2/ab_step.sh "$OLD" 1 1
el done
