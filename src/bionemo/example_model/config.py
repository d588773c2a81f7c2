"""
Model configs: which model and which loss each stage uses, and which checkpoint it starts from.

They are bionemo-llm `MegatronBioNeMoTrainableModelConfig`s (so also Megatron `TransformerConfig`s, which carry the
precision and parallelism settings NeMo fills in). The stages of the main job differ only in the config they pass to
the one training routine in `train.py`.
"""

from dataclasses import dataclass, field
from typing import Generic, Sequence, TypeVar

from bionemo.llm.model.config import MegatronBioNeMoTrainableModelConfig, TorchmetricsConfig
from bionemo.llm.utils import iomixin_utils as iom

from bionemo.example_model.checkpoints import check_initial_checkpoint
from bionemo.example_model.losses import (
    ClassifierLossReduction,
    MSELossReduction,
    MSEPlusClassifierLossReduction,
)
from bionemo.example_model.model import (
    HIDDEN,
    ExampleFineTuneBothModel,
    ExampleFineTuneModel,
    ExampleModel,
    ExampleModelTrunk,
)

__all__: Sequence[str] = (
    "ExampleFineTuneBothConfig",
    "ExampleFineTuneConfig",
    "ExampleGenericConfig",
    "PretrainConfig",
)

ExampleModelT = TypeVar("ExampleModelT", bound=ExampleModelTrunk)
LossT = TypeVar("LossT")


@dataclass
class ExampleGenericConfig(
    Generic[ExampleModelT, LossT],
    MegatronBioNeMoTrainableModelConfig[ExampleModelT, LossT],
    iom.IOMixinWithGettersSetters,
):
    """
    Builds `model_cls`, optionally loads `initial_ckpt_path` (skipping keys under
    `initial_ckpt_skip_keys_with_these_prefixes`), and names the loss reduction NeMo trains it with."""

    model_cls: type[ExampleModelT] = ExampleModel  # type: ignore[assignment]
    loss_cls: type[LossT] = MSELossReduction  # type: ignore[assignment]
    # TransformerConfig insists on these; the example's MLP reads none of them.
    num_layers: int = 1
    hidden_size: int = HIDDEN
    num_attention_heads: int = 1
    # bionemo-llm's module reads these; the example logs its losses through the loss reductions instead.
    train_metric: TorchmetricsConfig | None = None
    valid_metric: TorchmetricsConfig | None = None

    def configure_model(self) -> ExampleModelT:
        """The model, with the initial checkpoint's weights where one is given (checked first, with clear errors)."""
        model = self.model_cls(self)
        if self.initial_ckpt_path:
            check_initial_checkpoint(model, self.initial_ckpt_path, self.initial_ckpt_skip_keys_with_these_prefixes)
            self.update_model_from_checkpoint(model, self.initial_ckpt_path)
        return model

    def get_loss_reduction_class(self) -> type[LossT]:  # noqa: D102
        return self.loss_cls


@dataclass
class PretrainConfig(ExampleGenericConfig[ExampleModel, MSELossReduction]):
    """Stage 1: the autoencoder learns to reconstruct digits."""

    model_cls: type[ExampleModel] = ExampleModel
    loss_cls: type[MSELossReduction] = MSELossReduction


@dataclass
class ExampleFineTuneBothConfig(ExampleGenericConfig[ExampleFineTuneBothModel, MSEPlusClassifierLossReduction]):
    """Autoencoder plus a new digit classifier, trained on both losses (the head is new to the checkpoint)."""

    model_cls: type[ExampleFineTuneBothModel] = ExampleFineTuneBothModel
    loss_cls: type[MSEPlusClassifierLossReduction] = MSEPlusClassifierLossReduction
    initial_ckpt_skip_keys_with_these_prefixes: list[str] = field(default_factory=lambda: ["digit_classifier"])


@dataclass
class ExampleFineTuneConfig(ExampleGenericConfig[ExampleFineTuneModel, ClassifierLossReduction]):
    """Stage 2: the pretrained trunk with a new digit classifier, decoder dropped, trained on cross-entropy."""

    model_cls: type[ExampleFineTuneModel] = ExampleFineTuneModel
    loss_cls: type[ClassifierLossReduction] = ClassifierLossReduction
    initial_ckpt_skip_keys_with_these_prefixes: list[str] = field(default_factory=lambda: ["digit_classifier"])
