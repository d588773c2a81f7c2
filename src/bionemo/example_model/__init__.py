"""
bionemo-example_model: the reference MNIST example for training BioNeMo2 models the NeMo2 / Megatron way.

Kept import-light on purpose: `bionemo-mnist --help` must answer without importing torch or NeMo.
"""

from bionemo.example_model.bridges import install as install_bridges
from bionemo.example_model.bridges.torchvision_import import make_torchvision_importable_on_import
from bionemo.example_model.bridges.unified_memory_import import skip_unified_memory_build_on_import

make_torchvision_importable_on_import()
skip_unified_memory_build_on_import()

__all__ = ("install_bridges",)
