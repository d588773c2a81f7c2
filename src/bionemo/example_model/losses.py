"""
Loss reductions: what each stage optimises, and how microbatch and data-parallel losses are aggregated.

NeMo2 calls `forward(batch, forward_out)` once per microbatch; the first element it returns is what Megatron
back-propagates (Megatron divides it by the number of microbatches, and its DDP averages gradients over the
data-parallel ranks). The second element is kept per microbatch and handed to `reduce()` once per step for logging.

Logged losses must be the loss of the *global* batch, identical on every rank: the reduced training loss is part of
the checkpoint directory name, and ranks that disagree write shards into different directories. So each microbatch
records its mean *and* its sample count, and `reduce()` forms the sample-weighted mean over all microbatches of all
data-parallel ranks, which is right even when the last (validation/predict) microbatch is smaller. Such a reduction
is a `CountsReducedSamples`: the module reads the count to weigh each validation step's loss by its real samples.

Prediction has no loss: `PredictionReduction` passes the model output through, less the evaluation padding.
"""

import operator
from typing import Any, Generic, NamedTuple, Protocol, Sequence, TypedDict, TypeVar, runtime_checkable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from bionemo.llm.lightning import PassthroughLossReduction
from nemo.lightning.megatron_parallel import MegatronLossReduction
from torch import Tensor

from bionemo.example_model.data import MnistItem, is_real
from bionemo.example_model.model import ExampleFineTuneOutput, ExampleModelOutput

__all__: Sequence[str] = (
    "ClassifierLossReduction",
    "CountsReducedSamples",
    "KeepsItsLoss",
    "MSELossReduction",
    "MSEPlusClassifierLossReduction",
    "MicrobatchLoss",
    "PredictionReduction",
    "SameSizeLossDict",
)


class SameSizeLossDict(TypedDict):
    """The original example's per-microbatch record: a mean that is only aggregable over equal-size microbatches."""

    avg: Tensor


class MicrobatchLoss(SameSizeLossDict):
    """
    A microbatch's mean loss (`avg`, as before) and the number of samples it averages, so means of unequal
    microbatches and of several ranks can be combined exactly."""

    num_samples: Tensor


@runtime_checkable
class CountsReducedSamples(Protocol):
    """
    A loss reduction whose `reduce()` records the number of real samples its mean is over (None where it could not
    know: records without `num_samples`). Left to itself, Lightning weighs each validation step by an unrelated size
    when it averages them over the epoch (see `BionemoLightningModule`); with this count, each weighs what it holds."""

    reduced_num_samples: Tensor | None


@runtime_checkable
class KeepsItsLoss(Protocol):
    """
    A loss reduction that can keep the result of a call for its next one: the module's `training_step` computes the
    microbatch's loss with the reduction NeMo's step made for it, and NeMo's own call then gets that result, not a
    second computation of it (see `keep_for_the_next_call`)."""

    def keep_for_the_next_call(self, forward_out: Any, result: tuple[Tensor, Any]) -> None: ...  # noqa: D102


OutputT = TypeVar("OutputT", ExampleModelOutput, ExampleFineTuneOutput, Tensor)


class _SampleMeanLossReduction(MegatronLossReduction, Generic[OutputT]):
    """Shared mechanics (a `CountsReducedSamples`): subclasses say only how a per-sample loss is computed."""

    def __init__(self, validation_step: bool = False, val_drop_last: bool = True) -> None:
        # bionemo-llm's BionemoLightningModule constructs validation reductions with `validation_step=True`.
        super().__init__()
        self.validation_step = validation_step
        self.val_drop_last = val_drop_last
        self.reduced_num_samples: Tensor | None = None  # set by reduce(): the real samples its mean is over
        self._kept: _KeptLoss | None = None

    def keep_for_the_next_call(self, forward_out: OutputT, result: tuple[Tensor, MicrobatchLoss]) -> None:
        """
        Keep `result`, this reduction's answer for `forward_out` and its set-up batch, for its next call: that call
        returns it if it is for the same batch and output, unchanged since, in the same grad and autocast modes, and
        computes the loss otherwise. NeMo's step makes the microbatch's reduction, the module's `training_step`
        computes the loss with it (to log it, as the original example does), then NeMo calls it on the same output
        (outside the autocast Megatron may run the forward step in: then the loss is computed again)."""
        self._kept = _KeptLoss(self.batch, forward_out, _inputs(self.batch, forward_out), result)

    def per_sample_loss(self, batch: MnistItem, forward_out: OutputT) -> Tensor:
        """Loss of every sample in the microbatch, shape [batch]."""
        raise NotImplementedError

    def forward(self, batch: MnistItem, forward_out: OutputT) -> tuple[Tensor, MicrobatchLoss]:
        """Mean loss of this microbatch (to back-propagate) and its record for `reduce()`."""
        kept, self._kept = self._kept, None
        if kept is not None and kept.is_for(batch, forward_out):
            return kept.result
        losses = self.per_sample_loss(batch, forward_out).float()
        valid = is_real(batch["idx"]).to(losses.dtype)  # evaluation padding weighs nothing
        count = valid.sum()
        loss = torch.where(valid.bool(), losses, 0.0).sum() / count.clamp(min=1)
        # clone: Megatron divides the returned loss by the number of microbatches in place, and a detached view
        # shares its storage, which would scale the logged loss too.
        return loss, {"avg": loss.detach().clone(), "num_samples": count.detach()}

    def reduce(self, losses_reduced_per_micro_batch: Sequence[MicrobatchLoss | SameSizeLossDict]) -> Tensor:
        """
        Sample-weighted mean over every microbatch of every data-parallel rank (the same value on each rank).

        Records that carry only `avg` (the original example's `SameSizeLossDict`, e.g. from a subclass that overrides
        `forward` the original way) get the original's reduction: the plain mean of the microbatch means on this rank.
        """
        if not losses_reduced_per_micro_batch:
            raise ValueError("reduce() needs at least one microbatch record")
        if any("num_samples" not in m for m in losses_reduced_per_micro_batch):
            self.reduced_num_samples = None
            return torch.stack([m["avg"] for m in losses_reduced_per_micro_batch]).mean()
        totals = torch.stack(
            [
                torch.stack([(m["avg"].float() * m["num_samples"]).sum(), m["num_samples"].float().sum()])
                for m in losses_reduced_per_micro_batch
            ]
        ).sum(dim=0)
        group = _data_parallel_group()
        if group is not None and dist.get_world_size(group) > 1:  # a 1-rank all-reduce is a no-op with a cost
            dist.all_reduce(totals, op=dist.ReduceOp.SUM, group=group)
        self.reduced_num_samples = totals[1]
        return totals[0] / totals[1]


class _KeptLoss(NamedTuple):
    """A result kept by `keep_for_the_next_call`, with what it was computed from (see `_inputs`)."""

    batch: MnistItem
    forward_out: Any
    inputs: tuple[tuple, tuple[Tensor, ...], tuple[int, ...]]
    result: tuple[Tensor, MicrobatchLoss]

    def is_for(self, batch: MnistItem, forward_out: Any) -> bool:
        """Whether computing the loss of `batch` and `forward_out` now would give `result` again."""
        if batch is not self.batch or forward_out is not self.forward_out:
            return False
        modes, tensors, versions = _inputs(batch, forward_out)
        kept_modes, kept_tensors, kept_versions = self.inputs
        same_tensors = len(tensors) == len(kept_tensors) and all(map(operator.is_, tensors, kept_tensors))
        return same_tensors and modes == kept_modes and versions == kept_versions


def _inputs(batch: MnistItem, forward_out: Any) -> tuple[tuple, tuple[Tensor, ...], tuple[int, ...]]:
    """
    What a loss of `batch` and `forward_out` depends on besides the two containers: the grad and autocast modes, each
    tensor in them (an object: one put in a container's place is another input), and its version (in-place changes
    bump autograd's version counter)."""
    outputs = forward_out.values() if isinstance(forward_out, dict) else (forward_out,)
    tensors = tuple(t for t in (*batch.values(), *outputs) if isinstance(t, Tensor))
    autocast = ((torch.is_autocast_enabled(d), torch.get_autocast_dtype(d)) for d in ("cpu", "cuda"))
    return (torch.is_grad_enabled(), *autocast), tensors, tuple(t._version for t in tensors)


def _data_parallel_group() -> "dist.ProcessGroup | None":
    """Megatron's data-parallel group when one exists, else the default group, else None (single process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return None
    from megatron.core import parallel_state

    if parallel_state.model_parallel_is_initialized():
        return parallel_state.get_data_parallel_group()
    return dist.group.WORLD


def _reconstruction_loss(batch: MnistItem, forward_out: ExampleModelOutput) -> Tensor:
    target = batch["data"].flatten(start_dim=1).to(forward_out["x_hat"].dtype)
    return F.mse_loss(forward_out["x_hat"], target, reduction="none").mean(dim=1)


def _classification_loss(batch: MnistItem, forward_out: ExampleFineTuneOutput | Tensor) -> Tensor:
    # ExampleFineTuneModel returns the logits tensor itself; ExampleFineTuneBothModel returns them in its dict.
    logits = forward_out["digit_logits"] if isinstance(forward_out, dict) else forward_out
    return F.cross_entropy(logits.float(), batch["label"], reduction="none")


class MSELossReduction(_SampleMeanLossReduction[ExampleModelOutput]):
    """Pretraining: mean squared reconstruction error of the autoencoder."""

    def per_sample_loss(self, batch: MnistItem, forward_out: ExampleModelOutput) -> Tensor:  # noqa: D102
        return _reconstruction_loss(batch, forward_out)


class ClassifierLossReduction(_SampleMeanLossReduction[Tensor]):
    """Finetuning: cross-entropy of the digit classifier, whose output is the logits tensor (or a dict holding it)."""

    def per_sample_loss(self, batch: MnistItem, forward_out: Tensor) -> Tensor:  # noqa: D102
        return _classification_loss(batch, forward_out)


class MSEPlusClassifierLossReduction(_SampleMeanLossReduction[ExampleFineTuneOutput]):
    """Finetuning both heads: reconstruction error plus classifier cross-entropy, per sample."""

    def per_sample_loss(self, batch: MnistItem, forward_out: ExampleFineTuneOutput) -> Tensor:  # noqa: D102
        return _reconstruction_loss(batch, forward_out) + _classification_loss(batch, forward_out)


def _real_rows(batch: MnistItem, out: Any) -> Any:
    """`out` without the rows of evaluation padding (see `is_real`), in the same structure."""
    keep = is_real(batch["idx"])
    if bool(keep.all()):
        return out
    if isinstance(out, dict):
        return {key: value[keep] for key, value in out.items()}
    return out[keep]


class PredictionReduction(PassthroughLossReduction):
    """
    Predict-time "loss": the model output passed through (as bionemo-llm's passthrough does), less the padding that
    completes the last global batch; with `with_index`, a dict that adds each item's `idx` and `label`, so shares
    predicted on several ranks can be put back in dataset order."""

    def __init__(self, with_index: bool = False) -> None:
        super().__init__()
        self.with_index = with_index

    def forward(self, batch: MnistItem, forward_out: Any) -> tuple[Tensor, Any]:  # noqa: D102
        if self.with_index:
            out = forward_out if isinstance(forward_out, dict) else {"digit_logits": forward_out}
            forward_out = {**out, "idx": batch["idx"], "label": batch["label"]}
        detached = (
            {key: value.detach() for key, value in forward_out.items()}
            if isinstance(forward_out, dict)
            else forward_out.detach()
        )
        return torch.zeros((1, 1)), _real_rows(batch, detached)
