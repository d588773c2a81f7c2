"""
The Lightning module: bionemo-llm's `BionemoLightningModule` with the example's data and forward steps.

It wraps any `ExampleGenericConfig`: the config builds the model and names the loss; the module adds the
Megatron optimizer and the prediction output (logits together with each item's `idx` and `label`, so predictions
gathered from several ranks can be put back in dataset order).
"""

from typing import Iterator, Sequence

import torch
from bionemo.llm.lightning import BionemoLightningModule as _BionemoLightningModule
from bionemo.llm.lightning import PassthroughLossReduction
from megatron.core.optimizer import OptimizerConfig
from nemo.lightning.pytorch.optim import MegatronOptimizerModule
from torch import Tensor

from bionemo.example_model.config import ExampleGenericConfig
from bionemo.example_model.data import MnistItem
from bionemo.example_model.model import ExampleFineTuneOutput, ExampleModelOutput, ExampleModelTrunk

__all__: Sequence[str] = ("BionemoLightningModule", "PredictionReduction", "mnist_data_step", "mnist_forward_step")


def mnist_data_step(dataloader_iter: Iterator[MnistItem]) -> MnistItem:
    """Next microbatch, on the GPU when there is one (NeMo's iterator yields (batch, batch_idx, loader_idx))."""
    batch = next(dataloader_iter)
    if isinstance(batch, tuple) and len(batch) == 3:
        batch = batch[0]
    if torch.cuda.is_available():
        batch = {key: value.cuda(non_blocking=True) for key, value in batch.items()}  # type: ignore[assignment]
    return batch


def mnist_forward_step(model: ExampleModelTrunk, batch: MnistItem) -> ExampleModelOutput | ExampleFineTuneOutput:
    """Megatron's forward step: the model's output, which the stage's loss reduction turns into a loss."""
    return model(batch["data"])


class PredictionReduction(PassthroughLossReduction):
    """Predict-time "loss": pass the model output through, adding the items' `idx` and `label`."""

    def forward(self, batch: MnistItem, forward_out: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:  # noqa: D102
        out = {key: value.detach() for key, value in forward_out.items()}
        return torch.zeros((1, 1)), {**out, "idx": batch["idx"], "label": batch["label"]}


class BionemoLightningModule(_BionemoLightningModule):
    """
    A NeMo2 Lightning module for any example config, trained with Megatron's Adam.

    It also makes the logged `val_loss` the mean over every validation image. Upstream,
    nemo/lightning/pytorch/strategies/megatron_strategy.py `validation_step` logs each step's loss with
    `on_epoch=True` and no `batch_size`, and Lightning (dataloader_iter steps) then weighs each step by the size of
    the *previous* step's last microbatch, 1 for the first: the epoch value is neither the mean over the images nor
    independent of the micro batch size (and the short last step weighs as much as a full one). Here each step is
    weighed by the number of real images its loss is over, counted by the loss reduction.
    """

    def __init__(
        self,
        config: ExampleGenericConfig,
        lr: float = 1e-3,
        use_distributed_optimizer: bool = False,
        clip_grad: float = 1.0,
    ) -> None:
        optimizer = MegatronOptimizerModule(
            OptimizerConfig(
                optimizer="adam",
                lr=lr,
                use_distributed_optimizer=use_distributed_optimizer,
                clip_grad=clip_grad,
                bf16=config.bf16,
                fp16=config.fp16,
                params_dtype=config.params_dtype,
            )
        )
        super().__init__(
            config=config, forward_step=mnist_forward_step, data_step=mnist_data_step, optimizer=optimizer
        )

    def predict_loss_reduction(self) -> PredictionReduction:  # noqa: D102
        return PredictionReduction()

    def validation_loss_reduction(self):  # noqa: D102
        # NeMo builds one per validation step and calls its reduce(); keep it to read the step's sample count.
        self._validation_reduction = super().validation_loss_reduction()
        return self._validation_reduction

    def log(self, name: str, value, *args, batch_size: int | None = None, **kwargs) -> None:  # noqa: D102
        reduction = getattr(self, "_validation_reduction", None)
        counted = getattr(reduction, "reduced_num_samples", None)  # None: not one of the example's reductions
        if name == "val_loss" and batch_size is None and counted is not None:
            batch_size = int(counted)
        super().log(name, value, *args, batch_size=batch_size, **kwargs)
