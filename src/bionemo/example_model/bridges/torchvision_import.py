"""
The torchvision import hook: torchvision (imported by lightning through torchmetrics) must import on a CPU-only torch.

Kept apart from the CPU patches because it runs at the first import of torchvision, before any run exists and
without importing torch when the package itself is imported (keeps `bionemo-mnist --help` fast).
"""

import importlib.abc
import importlib.util
import sys
from pathlib import Path
from typing import Sequence

from bionemo.example_model.bridges.registry import skipped

__all__: Sequence[str] = ("make_torchvision_importable", "make_torchvision_importable_on_import")


def make_torchvision_importable() -> None:
    """
    Patch `torchvision_op_schemas`: let torchvision (and so lightning, via torchmetrics) import on a CPU torch.

    Upstream: torchvision 0.28 ships only CUDA builds; on a CPU torch its `_C.so` fails to load and
    `torchvision/_meta_registrations.py` then raises `RuntimeError: operator torchvision::nms does not exist` at
    import. Declaring the two op schemas it registers fakes for makes datasets and transforms work (the ops
    themselves stay unavailable). Where `_C.so` does load (a matching build), nothing is declared: declaring them
    there too aborts the process with a duplicate registration.
    """
    if skipped("torchvision_op_schemas"):
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
