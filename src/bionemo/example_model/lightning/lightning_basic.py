"""
The original example's import path: every public name of the example, with the original's signatures and defaults.

Importing it reads no data: `data_module` is an `MNISTDataModule` whose files are prepared only when a trainer calls
`prepare_data`/`setup`. `checkpoint_callback` is the original's module-level `ModelCheckpoint`, which its pretraining
script hands to `NeMoLogger` and reads `last_model_path` from afterwards.
"""

from typing import Sequence

from bionemo.core import BIONEMO_CACHE_DIR
from nemo.lightning.pytorch import callbacks as nl_callbacks

from bionemo.example_model.config import (
    ExampleFineTuneBothConfig,
    ExampleFineTuneConfig,
    ExampleGenericConfig,
    ExampleModelT,
    PretrainConfig,
)
from bionemo.example_model.data import MNISTCustomDataset, MNISTDataModule, MnistItem
from bionemo.example_model.losses import (
    ClassifierLossReduction,
    MSELossReduction,
    MSEPlusClassifierLossReduction,
    SameSizeLossDict,
)
from bionemo.example_model.model import (
    ExampleFineTuneBothModel,
    ExampleFineTuneModel,
    ExampleFineTuneOutput,
    ExampleModel,
    ExampleModelOutput,
    ExampleModelTrunk,
)
from bionemo.example_model.module import BionemoLightningModule

# The original's __all__ listed only some of its names; all of them are importable from here, and listed.
__all__: Sequence[str] = (
    "BIONEMO_CACHE_DIR",
    "BionemoLightningModule",
    "ClassifierLossReduction",
    "ExampleFineTuneBothConfig",
    "ExampleFineTuneBothModel",
    "ExampleFineTuneConfig",
    "ExampleFineTuneModel",
    "ExampleFineTuneOutput",
    "ExampleGenericConfig",
    "ExampleModel",
    "ExampleModelOutput",
    "ExampleModelT",
    "ExampleModelTrunk",
    "MNISTCustomDataset",
    "MNISTDataModule",
    "MSELossReduction",
    "MSEPlusClassifierLossReduction",
    "MnistItem",
    "PretrainConfig",
    "SameSizeLossDict",
    "checkpoint_callback",
    "data_module",
)

checkpoint_callback = nl_callbacks.ModelCheckpoint(
    save_last=True,
    save_on_train_epoch_end=True,
    monitor="val_loss",
    always_save_context=True,  # context/ beside weights/: what NeMo restores a checkpoint's model config from
)

data_module = MNISTDataModule(data_dir=str(BIONEMO_CACHE_DIR), batch_size=128)
