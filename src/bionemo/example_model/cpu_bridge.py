"""
The CPU bridge: the one place where stock NeMo2 / Megatron's CUDA assumptions are patched for CPU-only runs.

Every patch names the upstream file and the symptom it fixes, is applied only when the run has no CUDA device, and
has a canary test in tests/unit/test_cpu_bridge.py that runs the scenario with the patch switched off and asserts the
upstream symptom still appears (so a fixed upstream shows up as a failing canary, and the patch can be deleted).
A patch can be switched off for such a test with `BIONEMO_CPU_BRIDGE_SKIP=name,name`.
"""

import contextlib
import importlib.abc
import importlib.util
import os
import sys
from pathlib import Path
from typing import Callable, Iterator, Sequence

__all__: Sequence[str] = (
    "PATCHES",
    "PatchSet",
    "cuda_as_cpu",
    "cuda_on_cpu_for_a_moment",
    "install",
    "make_torchvision_importable",
    "make_torchvision_importable_on_import",
)

_SKIP_ENV = "BIONEMO_CPU_BRIDGE_SKIP"


def _skipped(name: str) -> bool:
    return name in {s.strip() for s in os.environ.get(_SKIP_ENV, "").split(",") if s.strip()}


def make_torchvision_importable() -> None:
    """
    Patch `torchvision_op_schemas`: let torchvision (and so lightning, via torchmetrics) import on a CPU torch.

    Upstream: torchvision 0.28 ships only CUDA builds; on a CPU torch its `_C.so` fails to load and
    `torchvision/_meta_registrations.py` then raises `RuntimeError: operator torchvision::nms does not exist` at
    import. Declaring the two op schemas it registers fakes for makes datasets and transforms work (the ops
    themselves stay unavailable). Where `_C.so` does load (a matching build), nothing is declared: declaring them
    there too aborts the process with a duplicate registration.
    """
    if _skipped("torchvision_op_schemas"):
        return
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        return
    import torch

    if hasattr(torch.ops.torchvision, "nms"):  # already declared (by torchvision's _C or by an earlier call)
        return
    lib_path = next(Path(spec.origin).parent.glob("_C*.so"), None)
    if lib_path is not None:
        try:
            torch.ops.load_library(str(lib_path))
            return
        except (OSError, RuntimeError):
            pass
    global _TORCHVISION_LIB
    _TORCHVISION_LIB = torch.library.Library("torchvision", "DEF")  # must stay alive: it owns the registrations
    _TORCHVISION_LIB.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _TORCHVISION_LIB.define("qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor")


_TORCHVISION_LIB = None


class _BeforeTorchvisionImport(importlib.abc.MetaPathFinder):
    """Runs `make_torchvision_importable` the moment anything first imports torchvision, then steps aside."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:  # noqa: D102
        if name == "torchvision" and self in sys.meta_path:
            sys.meta_path.remove(self)
            make_torchvision_importable()
        return None  # the regular finders import torchvision itself


def make_torchvision_importable_on_import() -> None:
    """
    Arrange for `make_torchvision_importable` to run just before torchvision is first imported, whoever imports it
    (lightning -> torchmetrics, bionemo-llm, our data module) and without importing torch now (keeps --help fast)."""
    if "torchvision" not in sys.modules and not any(isinstance(f, _BeforeTorchvisionImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _BeforeTorchvisionImport())


class PatchSet:
    """Named patches, each installed at most once per process unless switched off by `BIONEMO_CPU_BRIDGE_SKIP`."""

    def __init__(self) -> None:
        self.patches: dict[str, Callable[[], None]] = {}
        self.installed: list[str] = []

    def register(self, name: str) -> Callable[[Callable[[], None]], Callable[[], None]]:
        """Decorator adding a patch function under `name`."""

        def add(fn: Callable[[], None]) -> Callable[[], None]:
            self.patches[name] = fn
            return fn

        return add

    def install(self) -> list[str]:
        """Install every patch not yet installed or skipped; returns the names installed so far."""
        for name, patch in self.patches.items():
            if name not in self.installed and not _skipped(name):
                patch()
                self.installed.append(name)
        return list(self.installed)


PATCHES = PatchSet()


def install() -> list[str]:
    """Install every CPU patch (idempotent); call only for runs without CUDA."""
    return PATCHES.install()


# --------------------------------------------------------------------------------------------------------------------
# Runtime patches for CPU runs. On a CPU-only torch every patched call below raises; patched, it does the CPU work.


def _is_cuda_device(device: object) -> bool:
    if isinstance(device, int) and not isinstance(device, bool):
        return True  # a bare index means a CUDA device to torch
    if isinstance(device, str):
        return device.startswith("cuda")
    return isinstance(device, __import__("torch").device) and device.type == "cuda"


def _cuda_type_name(cpu_type: str) -> str:
    return cpu_type.replace("torch.", "torch.cuda.", 1) if not cpu_type.startswith("torch.cuda.") else cpu_type


class _CudaAsCpuMode:
    """A TorchFunctionMode in which the CPU plays the CUDA device (built lazily: torch is imported on install)."""

    @staticmethod
    def build():
        import torch
        from torch.overrides import TorchFunctionMode

        class CudaAsCpu(TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):
                kwargs = dict(kwargs or {})
                if func is torch.Tensor.cuda:
                    return args[0]
                if func is torch.Tensor.type and len(args) == 1 and not kwargs:
                    return _cuda_type_name(func(*args))
                if "device" in kwargs and _is_cuda_device(kwargs["device"]):
                    kwargs["device"] = "cpu"
                if kwargs.get("pin_memory"):
                    kwargs["pin_memory"] = False
                if func is torch.Tensor.to and len(args) > 1 and _is_cuda_device(args[1]):
                    args = (args[0], "cpu", *args[2:])
                return func(*args, **kwargs)

        return CudaAsCpu()


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
    process-wide TorchFunctionMode in which a CUDA
    device means the CPU, `.cuda()` is a no-op, pinning is dropped and `Tensor.type()` reports the CUDA type name.
    Only requests for CUDA, which would raise on this torch, change meaning.
    """
    mode = cuda_as_cpu()
    mode.__enter__()  # stays pushed for the life of the (CPU-only) process
    global _CUDA_AS_CPU
    _CUDA_AS_CPU = mode


_CUDA_AS_CPU = None


def cuda_as_cpu():
    """
    The `cuda_tensors_on_cpu` mode as a context manager, for code that must run upstream CUDA-only code on CPU
    for a moment without patching the process (the unit tests drive Megatron's schedule this way)."""
    return _CudaAsCpuMode.build()


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
