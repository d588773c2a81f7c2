"""Original entry point: `python -m bionemo.example_model.training_scripts.predict_mnist --finetune_dir DIR`."""

import sys

from bionemo.example_model.training_scripts._original import run

if __name__ == "__main__":
    sys.exit(run("predict", None, {"--finetune_dir": "--finetune-ckpt"}))
