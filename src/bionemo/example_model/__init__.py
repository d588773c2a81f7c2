"""
bionemo-example_model: the reference MNIST example for training BioNeMo2 models the NeMo2 / Megatron way.

Kept import-light on purpose: `bionemo-mnist --help` must answer without importing torch or NeMo.
"""

from typing import Literal

from bionemo.example_model.cpu_bridge import make_torchvision_importable_on_import

make_torchvision_importable_on_import()


def install_bridges(accelerator: Literal["auto", "cpu", "gpu"] = "auto") -> list[str]:
    """
    Patch this process's NeMo / Megatron where upstream is broken: the all-device patches always, and the CPU
    patches when the run is on the CPU (`auto`: when CUDA is unavailable). Call it once before building your own
    `nl.Trainer` (the package's own runs do); it is idempotent. Returns the names of the patches installed.
    """
    import torch

    from bionemo.example_model import cpu_bridge, nemo_bridge

    installed = nemo_bridge.install()
    if accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available()):
        installed += cpu_bridge.install()
    return installed
