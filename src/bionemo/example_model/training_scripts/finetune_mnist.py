"""
The original example's finetuning script:
`python -m bionemo.example_model.training_scripts.finetune_mnist --pretrain_ckpt_dirpath DIR`.
"""

import argparse
from pathlib import Path

from bionemo.example_model.lightning.lightning_basic import BionemoLightningModule, ExampleFineTuneConfig
from bionemo.example_model.training_scripts import _original


def run_finetune(checkpoint_dir: str, name: str, directory_name: str) -> Path:
    """
    Train a new digit classifier on the trunk of `checkpoint_dir` for 100 steps under `directory_name/classifier`;
    returns its last checkpoint."""
    from nemo.lightning.pytorch.callbacks import ModelCheckpoint

    checkpoint_callback = ModelCheckpoint(
        save_last=True, save_on_train_epoch_end=True, monitor="val_loss", always_save_context=True
    )
    config = ExampleFineTuneConfig(
        initial_ckpt_path=checkpoint_dir, initial_ckpt_skip_keys_with_these_prefixes={"digit_classifier"}
    )
    module = BionemoLightningModule(config=config)
    return _original.train(module, Path(directory_name) / "classifier", name, checkpoint_callback)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--pretrain_ckpt_dirpath", type=str, help="The checkpoint directory after pre-training")
    args = parser.parse_args()
    print(run_finetune(args.pretrain_ckpt_dirpath, "example", "sample_models"))
