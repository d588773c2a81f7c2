"""Original entry point: `python -m ...training_scripts.finetune_mnist --pretrain_ckpt_dirpath DIR`."""

import sys

from bionemo.example_model.training_scripts._original import run

if __name__ == "__main__":
    sys.exit(run("finetune", None, {"--pretrain_ckpt_dirpath": "--pretrain-ckpt"}))
