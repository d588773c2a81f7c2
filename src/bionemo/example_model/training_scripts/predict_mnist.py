"""
The original example's prediction script:
`python -m bionemo.example_model.training_scripts.predict_mnist --finetune_dir DIR`.
"""

import argparse

from bionemo.example_model.lightning.lightning_basic import (
    BIONEMO_CACHE_DIR,
    BionemoLightningModule,
    ExampleFineTuneConfig,
    MNISTDataModule,
)
from bionemo.example_model.training_scripts import _original


def run_predict(finetune_dir: str, test_length: int):
    """The digit logits of the test images, in order: a list with one [batch, 10] tensor per `test_length` images."""
    trainer = _original.trainer()
    module = BionemoLightningModule(config=ExampleFineTuneConfig(initial_ckpt_path=finetune_dir))
    data = MNISTDataModule(data_dir=str(BIONEMO_CACHE_DIR), batch_size=test_length, output_log=False)
    return trainer.predict(module, datamodule=data)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--finetune_dir", type=str, help="The directory with the fine-tuned model. ")
    args = parser.parse_args()
    print(run_predict(args.finetune_dir, 10_000))
