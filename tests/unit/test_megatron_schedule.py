"""Specification: gradient accumulation through Megatron's own schedule computes the gradient of the whole batch.

NeMo trains with megatron-core's `forward_backward_no_pipelining`, which back-propagates each microbatch's loss
divided by the number of microbatches and lets the gradients add up. With the example's loss reductions (the
microbatch mean), N equal microbatches must give exactly the gradient of one batch of N times the size, up to fp32
summation order. Run here on the real schedule, in one process with Megatron's parallel state (TP = PP = 1).
"""

import contextlib
from functools import partial
from types import SimpleNamespace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bionemo.example_model.bridges import cpu as cpu_bridges
from bionemo.example_model.config import ExampleFineTuneBothConfig
from bionemo.example_model.losses import MSEPlusClassifierLossReduction
from bionemo.example_model.model import ExampleFineTuneBothModel

pytestmark = pytest.mark.usefixtures("megatron_single_process")


def batch_of(size: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "data": torch.rand(size, 1, 28, 28, generator=g),
        "label": torch.randint(0, 10, (size,), generator=g),
        "idx": torch.arange(size),
    }


def on_this_device():
    """The schedule allocates on "cuda": on a CPU-only machine, run it under the CPU bridge's mode (scoped)."""
    return contextlib.nullcontext() if torch.cuda.is_available() else cpu_bridges.cuda_as_cpu()


def gradients_of(forward_step, model: torch.nn.Module, microbatches: list[dict]) -> dict[str, torch.Tensor]:
    """Gradients after one `forward_backward_no_pipelining` call with `forward_step` over `microbatches`."""
    from megatron.core.pipeline_parallel import get_forward_backward_func

    model.zero_grad(set_to_none=True)
    with on_this_device():
        get_forward_backward_func()(
            forward_step_func=forward_step,
            data_iterator=iter(microbatches),
            model=[model],
            num_microbatches=len(microbatches),
            seq_length=1,
            micro_batch_size=len(microbatches[0]["idx"]),
            forward_only=False,
        )
    return {name: p.grad.clone() for name, p in model.named_parameters()}


def schedule_gradients(model: torch.nn.Module, microbatches: list[dict]) -> dict[str, torch.Tensor]:
    """Gradients after one schedule call over `microbatches`, as NeMo runs it, with the model's output and loss."""

    def forward_step(data_iterator, module):
        batch = next(data_iterator)
        return module(batch["data"]), partial(MSEPlusClassifierLossReduction().forward, batch)

    return gradients_of(forward_step, model, microbatches)


@settings(max_examples=8, deadline=None)
@given(num_microbatches=st.integers(2, 6), micro=st.integers(1, 24), seed=st.integers(0, 2**31 - 1))
def test_accumulating_n_microbatches_gives_the_gradient_of_the_whole_batch(num_microbatches, micro, seed):
    torch.manual_seed(seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = ExampleFineTuneBothModel(ExampleFineTuneBothConfig()).to(device)
    whole = {k: v.to(device) for k, v in batch_of(num_microbatches * micro, seed).items()}
    parts = [{k: v[i * micro : (i + 1) * micro] for k, v in whole.items()} for i in range(num_microbatches)]

    accumulated = schedule_gradients(model, parts)
    single = schedule_gradients(model, [whole])

    assert sorted(accumulated) == sorted(single) and single
    for name in single:
        assert single[name].abs().sum() > 0, f"{name} got no gradient"
        torch.testing.assert_close(accumulated[name], single[name], rtol=1e-5, atol=1e-7, msg=name)


def nemo_step_gradients(module, microbatches: list[dict]) -> dict[str, torch.Tensor]:
    """
    Gradients after one schedule call whose forward step is NeMo's own (`MegatronParallel.wrapped_forward_step`, as
    NeMo builds it for a training step), around the module itself instead of its Megatron DDP wrapper."""
    from nemo.lightning.megatron_parallel import CallbackConnector, MegatronParallel, _ModuleStepFunction

    nemo = SimpleNamespace(  # what wrapped_forward_step reads of its MegatronParallel
        callbacks=CallbackConnector(),
        precision_plugin=None,
        _setup_module=partial(MegatronParallel._setup_module, None),
    )
    forward_step = MegatronParallel.wrapped_forward_step(
        nemo,
        forward_step=_ModuleStepFunction.from_forward_step(module, "training"),
        loss_reduction=_ModuleStepFunction.from_loss_reduction(module, "training"),
        data_step=next,
        context={"step": None},
    )
    return gradients_of(forward_step, module, microbatches)


@settings(max_examples=4, deadline=None)
@given(num_microbatches=st.integers(1, 3), micro=st.integers(1, 24), seed=st.integers(0, 2**31 - 1))
def test_each_microbatch_loss_is_computed_once_with_bitwise_the_gradients_of_computing_it_twice(
    num_microbatches, micro, seed
):
    """The module's `training_step` computes the loss to log it; NeMo's call of the same reduction gets that loss."""
    from bionemo.example_model.module import BionemoLightningModule

    torch.manual_seed(seed)
    module = BionemoLightningModule(ExampleFineTuneBothConfig())
    module.configure_model()
    microbatches = [batch_of(micro, seed + i) for i in range(num_microbatches)]
    computed = []
    per_sample_loss = MSEPlusClassifierLossReduction.per_sample_loss

    def counted(self, batch, forward_out):
        computed.append(batch["idx"])
        return per_sample_loss(self, batch, forward_out)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(MSEPlusClassifierLossReduction, "per_sample_loss", counted)
        once = nemo_step_gradients(module, microbatches)
        assert len(computed) == num_microbatches
        patch.setattr(MSEPlusClassifierLossReduction, "keep_for_the_next_call", lambda self, out, result: None)
        twice = nemo_step_gradients(module, microbatches)
        assert len(computed) == 3 * num_microbatches

    assert sorted(once) == sorted(twice) and once
    for name in once:
        assert torch.equal(once[name], twice[name]), name
