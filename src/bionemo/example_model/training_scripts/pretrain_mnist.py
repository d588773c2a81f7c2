"""Original entry point: `python -m bionemo.example_model.training_scripts.pretrain_mnist [bionemo-mnist flags]`."""

import sys

from bionemo.example_model.training_scripts._original import run

if __name__ == "__main__":
    sys.exit(run("pretrain", None, {}))
