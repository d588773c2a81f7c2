"""
The CPU patches: where stock NeMo2 / Megatron assume CUDA, each patch makes a CPU-only run do the CPU work; one
keeps the cost of that work's TorchFunctionMode out of the optimizer step and `self.log`.

Installed only for runs without a CUDA device (`bridges.install`). Each names the upstream file and symptom and has a
canary in tests/unit/test_bridges.py.
"""

import contextlib
import functools
from typing import Any, Callable, Iterator, Sequence, TypeVar

from bionemo.example_model.bridges.registry import PatchSet

__all__: Sequence[str] = ("PATCHES", "cuda_as_cpu", "cuda_on_cpu_for_a_moment", "outside_cuda_as_cpu")

PATCHES = PatchSet()
F = TypeVar("F", bound=Callable[..., Any])


# --------------------------------------------------------------------------------------------------------------------
# Runtime patches for CPU runs. On a CPU-only torch every patched call below raises; patched, it does the CPU work.


def _cuda_type_name(cpu_type: str) -> str:
    return cpu_type.replace("torch.", "torch.cuda.", 1) if not cpu_type.startswith("torch.cuda.") else cpu_type


@PATCHES.register("cuda_tensors_on_cpu")
def _cuda_tensors_on_cpu() -> None:
    """
    Hard-coded CUDA tensors and type strings in code every CPU step runs.

    Upstream: megatron/core/optimizer/optimizer.py (`device='cuda'` buffers, `p.data.cuda()`; FP32Optimizer),
    megatron/core/optimizer/clip_grads.py (`device='cuda'` norms; `param.grad.type() == 'torch.cuda.FloatTensor'`
    with the default clip_grad=1.0), megatron/core/optimizer/distrib_optimizer.py (`Wrapped parameters must be one of
    torch.cuda.FloatTensor...`), nemo/lightning/pytorch/strategies/megatron_strategy.py `training_step` logging
    (`torch.tensor(x, pin_memory=True).to("cuda")` every step). Symptom: `AssertionError: Torch not compiled with CUDA
    enabled`, first from FP32Optimizer.__init__'s `device='cuda'` loss scale, then the type assertion. Fix: a
    process-wide TorchFunctionMode in which a CUDA device means the CPU, `.cuda()` is a no-op, pinning is dropped and
    `Tensor.type()` reports the CUDA type name. Only requests for CUDA (they raise on this torch) change meaning.
    """
    cuda_as_cpu().__enter__()  # stays on torch's mode stack for the life of the (CPU-only) process


def cuda_as_cpu():
    """
    The `cuda_tensors_on_cpu` mode, a TorchFunctionMode in which the CPU plays the CUDA device, as a context manager:
    for code that must run upstream CUDA-only code on CPU for a moment without patching the process (the unit tests
    drive Megatron's schedule this way). Built on call, so importing this module does not import torch."""
    import torch
    from torch.overrides import TorchFunctionMode

    def is_cuda(device: object) -> bool:
        if isinstance(device, int) and not isinstance(device, bool):
            return True  # a bare index means a CUDA device to torch
        if isinstance(device, str):
            return device.startswith("cuda")
        return isinstance(device, torch.device) and device.type == "cuda"

    cuda, type_, to = torch.Tensor.cuda, torch.Tensor.type, torch.Tensor.to

    class CudaAsCpu(TorchFunctionMode):
        plays_cuda = True  # what `outside_cuda_as_cpu` recognises the mode by

        def __torch_function__(self, func, types, args=(), kwargs=None):
            if not kwargs and func is not cuda and func is not type_ and func is not to:
                return func(*args)  # most calls of a step (attribute reads, grad mode, math): nothing to rewrite
            kwargs = dict(kwargs or {})
            if func is cuda:
                return args[0]
            if func is type_ and len(args) == 1 and not kwargs:
                return _cuda_type_name(func(*args))
            if "device" in kwargs and is_cuda(kwargs["device"]):
                kwargs["device"] = "cpu"
            if kwargs.get("pin_memory"):
                kwargs["pin_memory"] = False
            if func is to and len(args) > 1 and is_cuda(args[1]):
                args = (args[0], "cpu", *args[2:])
            return func(*args, **kwargs)

    return CudaAsCpu()


def outside_cuda_as_cpu(function: F) -> F:
    """
    `function`, run with the `cuda_as_cpu` mode stepped out of when that mode is the innermost one (any other mode
    stays as it is), and put back however `function` returns or raises. For upstream code that never asks for CUDA and
    makes many torch calls a step: under the mode, each call goes through Python dispatch (~1.7 us here) for nothing.
    Whatever `function` calls back runs outside the mode too, so it must call back nothing that could ask for CUDA;
    and `function` must be a plain function (a generator's body would run after the mode is back)."""
    import torch
    from torch.overrides import _pop_mode_temporarily

    @functools.wraps(function)
    def outside(*args: Any, **kwargs: Any) -> Any:
        depth = torch._C._len_torch_function_stack()
        if depth and getattr(torch._C._get_function_stack_at(depth - 1), "plays_cuda", False):
            with _pop_mode_temporarily():
                return function(*args, **kwargs)
        return function(*args, **kwargs)

    return outside  # type: ignore[return-value]


class _NoStream:
    """Stand-in for a CUDA stream on CPU: work is synchronous, so waiting and switching streams are no-ops."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def wait_stream(self, other: object) -> None:  # noqa: D102
        pass

    def synchronize(self) -> None:  # noqa: D102
        pass


def _cuda_runtime_stand_ins() -> dict[str, object]:
    """The torch.cuda attributes `cuda_runtime_on_cpu` replaces, each with its CPU stand-in."""
    import torch

    return {
        "Stream": _NoStream,
        "stream": lambda stream=None: contextlib.nullcontext(),
        "default_stream": lambda device=None: _NoStream(),
        "current_stream": lambda device=None: _NoStream(),
        "current_device": lambda: torch.device("cpu"),
        "synchronize": lambda device=None: None,
        "max_memory_reserved": lambda device=None: 0,
        "max_memory_allocated": lambda device=None: 0,
    }


@PATCHES.register("cuda_free_calls_outside_the_cpu_mode")
def _cuda_free_calls_outside_the_cpu_mode() -> None:
    """
    Upstream: torch/optim/adam.py `Adam.step` (without Apex or TransformerEngine, megatron/core/optimizer/__init__.py
    steps torch's `AdamW`) and lightning/pytorch/core/module.py `LightningModule.log`, run under the process-wide
    TorchFunctionMode of `cuda_tensors_on_cpu`, which the CUDA-only code elsewhere in the step needs. Symptom: no
    error; each torch call under the mode costs ~1.7 us of Python dispatch on this CPU: ~140 calls in the optimizer's
    step and ~18 in each of the 8 `log` calls of a training step, ~0.4 ms of a ~6.5 ms CPU b128 step. Fix: both run
    outside the mode (`outside_cuda_as_cpu`), where neither asks for CUDA in a CPU run: the optimizer's tensors are
    its parameters' and state's, and `log` makes its tensors on the module's device, the CPU. What could ask for CUDA
    stays under the mode: a step given a closure (Lightning's automatic optimization of a plain torch optimizer runs
    the training step in it; Megatron's optimizer passes none), and `log` on a module whose device claims CUDA. The
    optimizer's step hooks run under the mode too, unless an Adam was built before this patch was installed (torch
    then wraps its profiling and hooks around the step before this patch does)."""
    import lightning.pytorch as pl
    import torch

    def outside_unless_given_a_closure(step: Callable[..., Any]) -> Callable[..., Any]:
        step_outside = outside_cuda_as_cpu(step)

        @functools.wraps(step)  # copies torch's `hooked` mark too: a step torch already wrapped is not wrapped again
        def stepped(self: torch.optim.Optimizer, closure: Callable[[], Any] | None = None) -> Any:
            return step_outside(self) if closure is None else step(self, closure)

        return stepped

    for optimizer in (torch.optim.Adam, torch.optim.AdamW):
        if "step" in vars(optimizer):  # AdamW may inherit Adam's
            optimizer.step = outside_unless_given_a_closure(optimizer.step)
    log, log_outside = pl.LightningModule.log, outside_cuda_as_cpu(pl.LightningModule.log)

    @functools.wraps(log)
    def log_on_cpu_outside(self: pl.LightningModule, *args: Any, **kwargs: Any) -> None:
        return (log_outside if self.device.type == "cpu" else log)(self, *args, **kwargs)

    pl.LightningModule.log = log_on_cpu_outside


@PATCHES.register("cuda_runtime_on_cpu")
def _cuda_runtime_on_cpu() -> None:
    """
    torch.cuda runtime calls made unconditionally.

    Upstream: nemo/lightning/megatron_parallel.py `init_model_parallel` (`torch.cuda.stream(torch.cuda.Stream())`
    around DDP init), megatron/core/distributed/param_and_grad_buffer.py and distributed_data_parallel.py
    (`device=torch.cuda.current_device()` for grad/param buffers, communication streams),
    megatron/core/dist_checkpointing/strategies/filesystem_async.py (`torch.cuda.synchronize()` on every save),
    nemo's `max_memory_*` logging. Symptom: `RuntimeError: torch.cuda.Stream requires CUDA support` / `Torch not
    compiled with CUDA enabled`. Fix: streams are no-ops, the current device is the CPU, synchronize is a no-op.
    """
    import torch

    for name, stand_in in _cuda_runtime_stand_ins().items():
        setattr(torch.cuda, name, stand_in)


@contextlib.contextmanager
def cuda_on_cpu_for_a_moment() -> Iterator[None]:
    """
    The `cuda_tensors_on_cpu` and `cuda_runtime_on_cpu` patches inside a `with` block only, undone after it: for
    tests that run Megatron's CUDA-only code (its checkpoint writer and reader) on CPU without patching the test
    process for good."""
    import torch

    stand_ins = _cuda_runtime_stand_ins()
    originals = {name: getattr(torch.cuda, name) for name in stand_ins}
    try:
        for name, stand_in in stand_ins.items():
            setattr(torch.cuda, name, stand_in)
        with cuda_as_cpu():
            yield
    finally:
        for name, original in originals.items():
            setattr(torch.cuda, name, original)


@PATCHES.register("resume_without_cuda_init")
def _resume_without_cuda_init() -> None:
    """
    Upstream: nemo/lightning/io/pl.py `_fix_tensors_device` asserts `torch.cuda.is_initialized()` when a
    checkpoint is loaded (resume, predict). Symptom: `AssertionError: (False, False)`. On CPU every tensor is already
    where it belongs, so the device fix-up is the identity."""
    import nemo.lightning.io.pl as nemo_pl

    nemo_pl._fix_tensors_device = lambda ckpt: ckpt
