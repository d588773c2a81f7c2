"""
The Lightning module: the original example's `BionemoLightningModule`, which wraps any example config.

The config builds the model and names the loss; the module adds Megatron's Adam and the steps NeMo's
`MegatronStrategy` calls. Its constructor and defaults are the original's (Adam, lr 1e-4, Megatron's distributed
optimizer); the main job passes its own learning rate and optimizer layout as keywords.
"""

from typing import Any, Sequence

import lightning.pytorch as pl
from bionemo.llm.lightning import LightningPassthroughPredictionMixin
from bionemo.llm.model.config import MegatronBioNeMoTrainableModelConfig
from megatron.core.optimizer import OptimizerConfig
from nemo.lightning import io
from nemo.lightning.megatron_parallel import MegatronLossReduction
from nemo.lightning.pytorch.optim import MegatronOptimizerModule

from bionemo.example_model.data import MnistItem
from bionemo.example_model.losses import CountsReducedSamples, KeepsItsLoss, PredictionReduction

__all__: Sequence[str] = ("BionemoLightningModule", "IndexedPredictionModule")


class BionemoLightningModule(pl.LightningModule, io.IOMixin, LightningPassthroughPredictionMixin):
    """
    A NeMo2 Lightning module for any `MegatronBioNeMoTrainableModelConfig` whose model takes `batch["data"]`.

    Beyond the original: the logged `val_loss` is the mean over every validation image. Upstream,
    nemo/lightning/pytorch/strategies/megatron_strategy.py `validation_step` logs each step's reduced loss with
    `on_epoch=True` and no `batch_size`, and Lightning (dataloader_iter steps) then weighs each step by the size of
    the *previous* step's last microbatch, 1 for the first: the epoch value is neither the mean over the images nor
    independent of the micro batch size. Here each step is weighed by the number of real images its loss reduction
    counted (so the original's extra per-microbatch `val_loss` log, which would be averaged into it, is not made).
    """

    def __init__(
        self,
        config: MegatronBioNeMoTrainableModelConfig,
        lr: float = 1e-4,
        use_distributed_optimizer: bool = True,
        clip_grad: float = 1.0,
    ) -> None:
        super().__init__()
        self.config = config
        self.vp_stage = None  # no virtual pipeline; NeMo reads it
        self._validation_reduction: MegatronLossReduction | None = None  # the current validation step's, for log()
        # The reduction this class's `training_loss_reduction` made last, which NeMo's step makes for the microbatch
        # `training_step` is about to compute: at most one (a list, so that nn.Module does not register a submodule).
        self._pending_training_reduction: list[MegatronLossReduction] = []
        self.optim = MegatronOptimizerModule(
            config=OptimizerConfig(
                optimizer="adam",
                lr=lr,
                use_distributed_optimizer=use_distributed_optimizer,
                clip_grad=clip_grad,
                bf16=config.bf16,
                fp16=config.fp16,
                params_dtype=config.params_dtype,
            )
        )
        self.optim.connect(self)  # binds configure_optimizers

    def configure_model(self) -> None:
        """Build the model from the config, once (NeMo calls this after the parallel state exists)."""
        if getattr(self, "module", None) is None:
            self.module = self.config.configure_model()
            if not hasattr(self.module, "vp_stage"):
                self.module.vp_stage = None

    def forward(self, batch: MnistItem, batch_idx: int | None = None) -> Any:
        """The model's output for a batch; Megatron's schedule reaches it through the `*_step` methods."""
        return self.module(batch["data"])

    def training_step(self, batch: MnistItem, batch_idx: int | None = None) -> Any:
        """
        The model output (NeMo's loss reduction makes the loss of it); logs this microbatch's `train_loss`.

        The loss is computed with the reduction NeMo made for this microbatch, which keeps the result for NeMo's own
        call on the same output: the microbatch's loss is computed once. Otherwise (a direct call, or a subclass's
        own `training_loss_reduction`) the step asks `training_loss_reduction()` for one, as the original does."""
        predictions = self(batch, batch_idx)
        pending = self._pending_training_reduction
        reduction = pending.pop() if pending else self.training_loss_reduction()
        pending.clear()  # what the call above may have made is this step's, not the next one's
        reduction.setup(batch)
        result = reduction(predictions)
        if isinstance(reduction, KeepsItsLoss):
            reduction.keep_for_the_next_call(predictions, result)
        _, record = result
        self.log(
            "train_loss",
            record["avg"],
            on_step=True,
            on_epoch=True,
            prog_bar=True,
            logger=True,
            batch_size=len(batch["data"]),
        )
        return predictions

    def validation_step(self, batch: MnistItem, batch_idx: int | None = None) -> Any:
        """The model output; NeMo's strategy logs the reduced `val_loss` of the whole step."""
        return self(batch, batch_idx)

    def predict_step(self, batch: MnistItem, batch_idx: int | None = None) -> Any:
        """The model output, as the original returns it."""
        return self(batch, batch_idx)

    def loss_reduction_class(self) -> type[MegatronLossReduction]:
        """The loss reduction the config names."""
        return self.config.get_loss_reduction_class()

    def training_loss_reduction(self) -> MegatronLossReduction:
        """A new reduction of the config's class. NeMo's step makes one per microbatch, before `training_step`."""
        reduction = self.loss_reduction_class()()
        if type(self).training_loss_reduction is BionemoLightningModule.training_loss_reduction:
            self._pending_training_reduction[:] = [reduction]  # a subclass's own may return another: not kept
        return reduction

    def validation_loss_reduction(self) -> MegatronLossReduction:  # noqa: D102
        # NeMo builds one per validation step and calls its reduce(); log() reads its sample count back.
        self._validation_reduction = self.loss_reduction_class()()
        return self._validation_reduction

    def test_loss_reduction(self) -> MegatronLossReduction:  # noqa: D102
        return self.loss_reduction_class()()

    def predict_loss_reduction(self) -> PredictionReduction:  # noqa: D102
        return PredictionReduction()

    def log(self, name: str, value, *args, batch_size: int | None = None, **kwargs) -> None:  # noqa: D102
        reduction = self._validation_reduction
        if name == "val_loss" and batch_size is None and isinstance(reduction, CountsReducedSamples):
            counted = reduction.reduced_num_samples
            batch_size = int(counted) if counted is not None else None
        super().log(name, value, *args, batch_size=batch_size, **kwargs)


class IndexedPredictionModule(BionemoLightningModule):
    """The module the main job predicts with: each prediction carries its item's `idx` and `label`."""

    def predict_loss_reduction(self) -> PredictionReduction:  # noqa: D102
        return PredictionReduction(with_index=True)
