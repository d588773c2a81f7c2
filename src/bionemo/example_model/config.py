"""
Model configs: which model and which loss each stage uses, and which checkpoint it starts from.

They are bionemo-llm `MegatronBioNeMoTrainableModelConfig`s (so also Megatron `TransformerConfig`s, which carry the
precision and parallelism settings NeMo fills in). The stages of the main job differ only in the config they pass to
the one training routine in `train.py`.
"""

import logging
from dataclasses import dataclass, field
from typing import Generic, Sequence, TypeVar

from bionemo.llm.model.config import (
    OVERRIDE_BIONEMO_CONFIG_DEFAULTS,
    MegatronBioNeMoTrainableModelConfig,
    TorchmetricsConfig,
)
from bionemo.llm.utils import iomixin_utils as iom

from bionemo.example_model.checkpoints import check_checkpoint_fits, check_is_checkpoint
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
    "ExampleModelT",
    "PretrainConfig",
)

logger = logging.getLogger("bionemo.example_model")

ExampleModelT = TypeVar("ExampleModelT", bound=ExampleModelTrunk)
LossT = TypeVar("LossT")


@dataclass
class ExampleGenericConfig(
    Generic[ExampleModelT, LossT],
    MegatronBioNeMoTrainableModelConfig[ExampleModelT, LossT],
    iom.IOMixinWithGettersSetters,
):
    """
    Builds `model_cls` and names the loss reduction NeMo trains it with. Given `initial_ckpt_path`, it first takes
    the checkpoint's model settings (all but `override_parent_fields`), then its weights, skipping keys under
    `initial_ckpt_skip_keys_with_these_prefixes` (empty by default: every weight must come from the checkpoint)."""

    model_cls: type[ExampleModelT] = ExampleModel  # type: ignore[assignment]
    loss_cls: type[LossT] = MSELossReduction  # type: ignore[assignment]
    # TransformerConfig insists on these; the example's MLP reads none of them.
    num_layers: int = 1
    hidden_size: int = HIDDEN
    num_attention_heads: int = 1
    # The loss is chosen by this config, not inherited from the checkpoint's.
    override_parent_fields: list[str] = field(default_factory=lambda: [*OVERRIDE_BIONEMO_CONFIG_DEFAULTS, "loss_cls"])
    # bionemo-llm's module reads these; the example logs its losses through the loss reductions instead.
    train_metric: TorchmetricsConfig | None = None
    valid_metric: TorchmetricsConfig | None = None

    def configure_model(self) -> ExampleModelT:
        """The model, with the initial checkpoint's settings and weights where one is given (checked first)."""
        if self.initial_ckpt_path:
            check_is_checkpoint(self.initial_ckpt_path)
            self.load_settings_from_checkpoint(self.initial_ckpt_path)
        model = self.model_cls(self)
        if self.initial_ckpt_path:
            skip = self.initial_ckpt_skip_keys_with_these_prefixes
            check_checkpoint_fits(model, self.initial_ckpt_path, skip)
            self.update_model_from_checkpoint(model, self.initial_ckpt_path)
            fresh = sorted(k for k in model.state_dict() if any(k.startswith(p) for p in skip))
            if fresh:
                logger.warning(
                    "%s: not loaded from %s, left at their initial values: %s",
                    type(model).__name__,
                    self.initial_ckpt_path,
                    ", ".join(fresh),
                )
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
    """
    Autoencoder plus a digit classifier, trained on both losses. From an autoencoder checkpoint, skip the new head
    with `initial_ckpt_skip_keys_with_these_prefixes=["digit_classifier"]`."""

    model_cls: type[ExampleFineTuneBothModel] = ExampleFineTuneBothModel
    loss_cls: type[MSEPlusClassifierLossReduction] = MSEPlusClassifierLossReduction


@dataclass
class ExampleFineTuneConfig(ExampleGenericConfig[ExampleFineTuneModel, ClassifierLossReduction]):
    """
    Stage 2: the trunk with a digit classifier, decoder dropped, trained on cross-entropy. Starting from a pretrained
    (headless) checkpoint needs `initial_ckpt_skip_keys_with_these_prefixes=["digit_classifier"]`; from a finetuned
    one, the default loads the head too (the original example's predict)."""

    model_cls: type[ExampleFineTuneModel] = ExampleFineTuneModel
    loss_cls: type[ClassifierLossReduction] = ClassifierLossReduction
