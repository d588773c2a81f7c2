"""Specification: the bridge's sync-free gradient clipping clips exactly as megatron-core's own functions do.

Where megatron-core falls back to its local l2 norm (no Apex / TransformerEngine), the `grad_clip_without_host_sync`
bridge points its optimizer at `grad_norm_fp32_on_device` and `clip_grad_by_total_norm_fp32_on_device`, which keep
the norm on the device (issue 16). The clipped gradients must be bit for bit those of megatron's
`clip_grad_by_total_norm_fp32(params, max_norm, get_grad_norm_fp32(grads))`, whether or not the norm exceeds
`max_norm`, with inf or NaN gradients too; the norm may differ from megatron's Python float in its last bit only
(megatron's `x ** 0.5` is not always the correctly rounded square root).
"""

import math

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bionemo.example_model.bridges.all_devices import clip_grad_by_total_norm_fp32_on_device, grad_norm_fp32_on_device
from bionemo.example_model.bridges.cpu import cuda_on_cpu_for_a_moment
from support.host_reads import host_reads

pytestmark = pytest.mark.usefixtures("megatron_single_process")

SHAPES = [(64, 784), (64,), (784, 64), (784,), (10, 64), (10,)]  # the finetuned model's parameters, roughly


def params_with_grads(seed: int, scale: float, poison: str) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    params = []
    for shape in SHAPES:
        p = torch.nn.Parameter(torch.zeros(shape))
        p.grad = torch.randn(shape, generator=g) * scale
        params.append(p)
    if poison:
        params[2].grad[3, 5] = float(poison)
    return params


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.int32)  # NaN == NaN, and -0.0 != 0.0: equal bits, not equal values


def megatron_clip(params: list[torch.nn.Parameter], max_norm: float) -> float:
    """What megatron's optimizer does to clip, with megatron-core's own two functions; returns the norm."""
    from megatron.core.optimizer.clip_grads import clip_grad_by_total_norm_fp32, get_grad_norm_fp32

    with cuda_on_cpu_for_a_moment():  # upstream allocates on "cuda" and asserts torch.cuda.FloatTensor grads
        norm = get_grad_norm_fp32([p.grad for p in params], grad_stats_parallel_group=None)
        clip_grad_by_total_norm_fp32(params, max_norm, norm)
    return norm


def bridge_clip(params: list[torch.nn.Parameter], max_norm: float) -> torch.Tensor:
    """The same, with the bridge's two functions."""
    norm = grad_norm_fp32_on_device([p.grad for p in params], grad_stats_parallel_group=None)
    clip_grad_by_total_norm_fp32_on_device(params, max_norm, norm)
    return norm


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    scale=st.sampled_from([1e-6, 1e-4, 1e-3, 3e-3, 1e-2, 1e-1, 1.0, 10.0, 1e3]),
    max_norm=st.sampled_from([0.5, 1.0, 5.0]),
    poison=st.sampled_from(["", "", "", "inf", "nan"]),
)
@example(seed=0, scale=1e-3, max_norm=1.0, poison="")  # norm ~0.5: no clipping
@example(seed=0, scale=1.0, max_norm=1.0, poison="")  # norm ~500: clipped
@example(seed=0, scale=1.0, max_norm=1.0, poison="nan")  # upstream leaves NaN grads unscaled
@example(seed=0, scale=1.0, max_norm=1.0, poison="inf")  # upstream scales by 0: inf * 0 = NaN
def test_clipped_grads_are_bitwise_megatrons_and_the_norm_within_one_ulp(seed, scale, max_norm, poison):
    ours, theirs = params_with_grads(seed, scale, poison), params_with_grads(seed, scale, poison)
    norm = bridge_clip(ours, max_norm)
    expected_norm = megatron_clip(theirs, max_norm)
    for mine, upstream in zip(ours, theirs):
        assert torch.equal(bits(mine.grad), bits(upstream.grad))
    assert norm.dtype == torch.float64 and norm.shape == (1,)
    got = norm.item()
    if math.isfinite(expected_norm):
        assert abs(got - expected_norm) <= math.ulp(expected_norm)
    else:
        assert math.isnan(got) == math.isnan(expected_norm) and (math.isnan(got) or got == expected_norm)


def test_the_clip_reads_nothing_back_to_the_host():
    """No `.item()`, `float()`, `.tolist()` or `bool()` of a tensor while clipping: nothing waits for the device."""
    reads: list[str] = []
    params = params_with_grads(0, 1.0, "")
    with host_reads(reads):
        bridge_clip(params, 1.0)
    assert reads == []
