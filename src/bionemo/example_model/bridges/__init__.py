"""
Bridges: where upstream NeMo / Megatron is broken for this example, patched in this process.

- `registry`: `PatchSet`, the named-patch registry, and the `BIONEMO_BRIDGE_SKIP` switch the canaries use;
- `all_devices`: patches every run needs;
- `cpu`: patches for runs without a CUDA device;
- `torchvision_import`: the hook that lets torchvision import on a CPU-only torch;
- `unified_memory_import`: the hook that keeps megatron-core from building its unified-memory allocator at import.

Every patch names its upstream file and symptom and has a canary in tests/unit/test_bridges.py that runs the scenario
with the patch switched off and asserts the symptom still appears: a fixed upstream shows up as a failing canary,
and the patch can be deleted. Importing this package imports neither torch nor NeMo.
"""

from typing import Literal, Sequence

from bionemo.example_model.bridges import all_devices, cpu
from bionemo.example_model.bridges.registry import PatchSet

__all__: Sequence[str] = ("PATCH_SETS", "install", "installed")

PATCH_SETS: dict[str, PatchSet] = {"all_devices": all_devices.PATCHES, "cpu": cpu.PATCHES}


def install(accelerator: Literal["auto", "cpu", "gpu"] = "auto") -> list[str]:
    """
    Patch this process's NeMo / Megatron where upstream is broken: the all-device patches always, and the CPU
    patches when the run is on the CPU (`auto`: when CUDA is unavailable). Call it once before building your own
    `nl.Trainer` (the package's own runs do); it is idempotent. Returns the names of the patches installed.
    """
    import torch

    names = all_devices.PATCHES.install()
    if accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available()):
        names += cpu.PATCHES.install()
    return names


def installed() -> list[str]:
    """The names of the patches installed in this process so far, every set together."""
    return [name for patches in PATCH_SETS.values() for name in patches.installed]
