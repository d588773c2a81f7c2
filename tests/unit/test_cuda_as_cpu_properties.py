"""
Property: the CPU bridge's `cuda_tensors_on_cpu` TorchFunctionMode (bridges.cpu.cuda_as_cpu) is transparent. A tensor
made or moved "to CUDA" under it is exactly the tensor the same call makes on the CPU: same values, shape, dtype and
requires_grad, whichever way the CUDA device is spelled; calls that ask for the CPU or the meta device are not
touched. (All CPU training is fp32, so a bridge that changed a dtype or dropped requires_grad would pass every
training test.) And code run `outside_cuda_as_cpu` computes what it computes under the mode, without the mode's
dispatch, and finds the modes as they were when it returns or raises.
"""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.overrides import TorchFunctionMode, _get_current_function_mode_stack

from bionemo.example_model.bridges.cpu import cuda_as_cpu, cuda_on_cpu_for_a_moment, outside_cuda_as_cpu

CUDA_SPELLINGS = ["cuda", "cuda:0", torch.device("cuda"), torch.device("cuda", 0), torch.device("cuda:0"), 0]
FLOAT_DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
DTYPES = [*FLOAT_DTYPES, torch.int64, torch.int32, torch.uint8, torch.bool]


def _values(shape: list[int]) -> list:
    """A nested list of small ints of `shape` (for torch.tensor)."""
    if not shape:
        return 2
    return [_values(shape[1:]) for _ in range(shape[0])]


FACTORIES = {
    "zeros": lambda shape, **kw: torch.zeros(shape, **kw),
    "ones": lambda shape, **kw: torch.ones(shape, **kw),
    "full": lambda shape, **kw: torch.full(shape, 3, **kw),
    "empty": lambda shape, **kw: torch.empty(shape, **kw),
    "arange": lambda shape, **kw: torch.arange(math.prod(shape), **kw),
    "eye": lambda shape, **kw: torch.eye(len(shape) + 1, **kw),
    "tensor": lambda shape, **kw: torch.tensor(_values(shape), **kw),
    "rand": lambda shape, **kw: torch.rand(shape, generator=torch.Generator().manual_seed(0), **kw),
    "zeros_like": lambda shape, **kw: torch.zeros_like(torch.ones(shape), **kw),
    "new_full": lambda shape, **kw: torch.ones(1).new_full(shape, 5, **kw),
}


def outcome(make, compare_values: bool = True) -> tuple:
    """What a call gives, comparably: its tensor's properties and values, or the type of the error it raises."""
    try:
        t = make()
    except Exception as e:  # the CPU call itself may refuse (torch.rand of ints): the mode must refuse alike
        return ("raises", type(e))
    values = t.detach().float().tolist() if compare_values and t.device.type != "meta" else None
    return (t.device.type, t.dtype, t.requires_grad, tuple(t.shape), values)


@st.composite
def requests(draw) -> tuple[list[int], torch.dtype, bool]:
    """A shape, a dtype (any, not only fp32) and requires_grad (True only where the dtype can have a gradient)."""
    shape = draw(st.lists(st.integers(0, 3), max_size=3))
    dtype = draw(st.sampled_from(DTYPES))
    requires_grad = draw(st.booleans()) if dtype in FLOAT_DTYPES else False
    return shape, dtype, requires_grad


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(sorted(FACTORIES)), request=requests(), cuda=st.sampled_from(CUDA_SPELLINGS))
def test_a_factory_asked_for_cuda_under_the_bridge_gives_exactly_what_it_gives_on_cpu(name, request, cuda):
    shape, dtype, requires_grad = request
    factory, same_values = FACTORIES[name], name != "empty"
    kwargs = {"dtype": dtype, "requires_grad": requires_grad}
    expected = outcome(lambda: factory(shape, device="cpu", **kwargs), same_values)
    with cuda_as_cpu():
        actual = outcome(lambda: factory(shape, device=cuda, **kwargs), same_values)
    assert actual == expected


TO_CALLS = {
    "to(device)": lambda x, device, dtype: x.to(device),
    "to(device, dtype)": lambda x, device, dtype: x.to(device, dtype),
    "to(device=, dtype=)": lambda x, device, dtype: x.to(device=device, dtype=dtype),
    "to(device, dtype, copy=True)": lambda x, device, dtype: x.to(device, dtype, copy=True),
}


@settings(max_examples=200, deadline=None)
@given(
    call=st.sampled_from(sorted(TO_CALLS)),
    cuda=st.sampled_from(CUDA_SPELLINGS),
    dtype=st.sampled_from(DTYPES),
    requires_grad=st.booleans(),
)
def test_tensor_to_cuda_under_the_bridge_gives_exactly_what_tensor_to_cpu_gives(call, cuda, dtype, requires_grad):
    x = torch.arange(6, dtype=torch.float32).reshape(2, 3).requires_grad_(requires_grad)
    expected = outcome(lambda: TO_CALLS[call](x, "cpu", dtype))
    with cuda_as_cpu():
        actual = outcome(lambda: TO_CALLS[call](x, cuda, dtype))
    assert actual == expected


@pytest.mark.parametrize("device", ["cpu", "meta", torch.device("meta"), torch.device("cpu")])
@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_factories_asked_for_cpu_or_meta_are_untouched_by_the_bridge(name, device):
    kwargs = {"device": device, "dtype": torch.float64}
    expected = outcome(lambda: FACTORIES[name]([2, 3], **kwargs), name != "empty")
    with cuda_as_cpu():
        actual = outcome(lambda: FACTORIES[name]([2, 3], **kwargs), name != "empty")
    assert actual == expected
    assert actual[0] == torch.device(device).type


@pytest.mark.parametrize("device", ["meta", torch.device("meta")])
def test_tensor_to_meta_is_untouched_by_the_bridge(device):
    x = torch.ones(2, 3, requires_grad=True)
    with cuda_as_cpu():
        moved = x.to(device, torch.float16)
    assert (moved.device.type, moved.dtype, moved.requires_grad) == ("meta", torch.float16, True)


def test_tensor_cuda_under_the_bridge_is_the_tensor_itself():
    x = torch.ones(3, dtype=torch.float16, requires_grad=True)
    with cuda_as_cpu():
        assert x.cuda() is x


@pytest.mark.parametrize("dtype", DTYPES)
def test_tensor_type_under_the_bridge_names_the_cuda_type_of_the_cpu_tensor_and_converts_as_on_cpu(dtype):
    """Megatron's gradient clipping asserts `grad.type() == 'torch.cuda.FloatTensor'`; a conversion is untouched."""
    x = torch.ones(2, dtype=dtype)
    with cuda_as_cpu():
        name, converted = x.type(), x.type(torch.float64)
    assert name == x.type().replace("torch.", "torch.cuda.", 1)
    assert converted.dtype == torch.float64 and converted.device.type == "cpu"


def test_cuda_on_cpu_for_a_moment_serves_megatrons_cuda_calls_and_then_leaves_torch_cuda_as_it_was():
    names = ("Stream", "current_device", "synchronize", "max_memory_allocated")
    before = {name: getattr(torch.cuda, name) for name in names}
    modes = torch._C._len_torch_function_stack()
    with cuda_on_cpu_for_a_moment():
        assert torch._C._len_torch_function_stack() == modes + 1
        torch.cuda.synchronize()
        assert torch.zeros(2, device=torch.cuda.current_device()).device.type == "cpu"
        assert all(getattr(torch.cuda, name) is not before[name] for name in names)
    assert all(getattr(torch.cuda, name) is before[name] for name in names)
    assert torch._C._len_torch_function_stack() == modes  # the CUDA-as-CPU mode is popped too


class Counting(TorchFunctionMode):
    """A mode that counts the torch calls that reach it."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls += 1
        return func(*args, **(kwargs or {}))


def adam_steps(values: list[float]) -> torch.Tensor:
    """Three AdamW steps on a parameter made of `values`, each with a gradient derived from them."""
    param = torch.nn.Parameter(torch.tensor(values))
    optimizer = torch.optim.AdamW([param], lr=0.1)
    for step in range(3):
        param.grad = torch.tensor(values) * (step - 1)
        optimizer.step()
    return param.detach()


finite = st.floats(-1e3, 1e3, allow_nan=False, width=32)


@settings(max_examples=25, deadline=None)
@given(values=st.lists(finite, min_size=1, max_size=8))
def test_a_call_outside_the_cpu_mode_makes_no_call_through_it_and_computes_bitwise_what_it_computes_under_it(values):
    with Counting() as counter:  # below the CUDA-as-CPU mode: sees what that mode passes on, and calls made without it
        with cuda_as_cpu() as mode:
            dispatch = type(mode).__torch_function__
            through: list[object] = []
            type(mode).__torch_function__ = lambda *a, **k: (through.append(a[1]), dispatch(*a, **k))[-1]
            under = adam_steps(values)
            calls_under, calls_below, through[:] = len(through), counter.calls, []
            outside = outside_cuda_as_cpu(adam_steps)(values)
    # none went through the CUDA-as-CPU mode; the mode below it still saw every one
    assert calls_under > 0 and through == [] and counter.calls - calls_below == calls_under
    assert torch.equal(under, outside)


def test_the_modes_are_as_they_were_after_a_call_outside_the_cpu_mode_returns_or_raises():
    def fails() -> None:
        raise ValueError("from inside")

    with Counting(), cuda_as_cpu():
        modes = _get_current_function_mode_stack()
        assert outside_cuda_as_cpu(lambda: _get_current_function_mode_stack())() == modes[:-1] != []
        assert _get_current_function_mode_stack() == modes
        with pytest.raises(ValueError, match="from inside"):
            outside_cuda_as_cpu(fails)()
        assert _get_current_function_mode_stack() == modes
        assert torch.zeros(1, device="cuda").device.type == "cpu"


def test_a_call_outside_the_cpu_mode_under_another_innermost_mode_runs_under_every_mode_as_it_is():
    with cuda_as_cpu(), Counting() as counter:
        modes = _get_current_function_mode_stack()
        seen = outside_cuda_as_cpu(lambda: (_get_current_function_mode_stack(), torch.zeros(1, device="cuda")))()
    assert seen[0] == modes and seen[1].device.type == "cpu" and counter.calls == 1
