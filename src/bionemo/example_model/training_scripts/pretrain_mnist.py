"""The original example's pretraining script: `python -m bionemo.example_model.training_scripts.pretrain_mnist`."""

from pathlib import Path

from bionemo.example_model.lightning.lightning_basic import BionemoLightningModule, PretrainConfig, checkpoint_callback
from bionemo.example_model.training_scripts import _original


def run_pretrain(name: str, directory_name: str) -> Path:
    """Pretrain the autoencoder for 100 steps under `directory_name/pretrain`; returns its last checkpoint."""
    module = BionemoLightningModule(config=PretrainConfig())
    return _original.train(module, Path(directory_name) / "pretrain", name, checkpoint_callback)


if __name__ == "__main__":
    print(run_pretrain("example", "sample_models"))
