"""
The original example's import path: every public name of the example, re-exported.

Importing it builds nothing and reads no data: `data_module` is an `MNISTDataModule` whose files are prepared only
when a trainer calls `prepare_data`/`setup`.
"""

from typing import Sequence

from bionemo.example_model.checkpoints import checkpoint_callback
from bionemo.example_model.config import (
    ExampleFineTuneBothConfig,
    ExampleFineTuneConfig,
    ExampleGenericConfig,
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

__all__: Sequence[str] = (
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

data_module = MNISTDataModule()
"""A ready datamodule with the defaults (micro batch 128, seed 42, data under BIONEMO_CACHE_DIR/mnist)."""
