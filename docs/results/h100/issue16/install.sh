# Sourced by install_and_bench.sh and b8192/profile.sh (repo root, wheelhouse/ built): install from the wheelhouse
# into /tmp/site, put this checkout's src/ first on the path, and prepare MNIST offline in /tmp/mnist.
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
bash tools/install_wheelhouse.sh wheelhouse/ > /tmp/install.log 2>&1 || { tail -20 /tmp/install.log; exit 1; }
nvidia-smi -L
export PYTHONPATH=$PWD/src:/tmp/site PATH=/tmp/site/bin:$PATH
python3 -c "import bionemo.example_model as m, torch; print(m.__file__, torch.__version__)"
python3 -c "from bionemo.example_model.mnist_files import ensure_mnist as e; e('/tmp/mnist', allow_download=False)"
el installed
