"""
The unified-memory import hook: megatron-core must not build its unified-memory allocator at import.

Kept apart from the registered patches because it acts while megatron.core is first imported (by bionemo-llm's config,
which the example's configs extend), before any run exists, and without importing torch when the package itself is
imported (keeps `bionemo-mnist --help` fast).
"""

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from types import ModuleType
from typing import Any, Sequence

from bionemo.example_model.bridges.registry import skipped

__all__: Sequence[str] = ("MODULE", "PATCH", "skip_unified_memory_build_on_import")

PATCH = "unified_memory_not_built_at_import"
MODULE = "megatron.core.inference.unified_memory"


class _ExecWithoutBuild(importlib.abc.Loader):
    """
    Upstream's loader of `MODULE`, except that while the module's body runs, `torch.utils.cpp_extension.load_inline`
    (which the body imports by name) raises, for that module only, as a failed build does; afterwards the module's
    `load_inline` is torch's again."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:  # noqa: D102
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:  # noqa: D102
        import torch.utils.cpp_extension as cpp_extension

        load_inline = cpp_extension.load_inline

        def not_built_for_megatron(*args: Any, **kwargs: Any) -> Any:
            if sys._getframe(1).f_globals.get("__name__") != MODULE:  # another thread's call meanwhile
                return load_inline(*args, **kwargs)
            raise RuntimeError(f"bionemo-example_model: not built at import ({PATCH}; BIONEMO_BRIDGE_SKIP={PATCH})")

        cpp_extension.load_inline = not_built_for_megatron
        try:
            self.loader.exec_module(module)
        finally:
            cpp_extension.load_inline = load_inline
            if getattr(module, "load_inline", None) is not_built_for_megatron:
                module.load_inline = load_inline
            _step_aside()

    def __getattr__(self, name: str) -> Any:  # get_source, is_package, ...: upstream's loader answers
        return getattr(self.loader, name)


class _UnifiedMemoryWithoutBuild(importlib.abc.MetaPathFinder):
    """
    Finds `MODULE` through the regular finders, with `_ExecWithoutBuild` as its loader; steps aside once the module
    has been executed (a mere `find_spec` probe leaves it in place)."""

    finding = False

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:  # noqa: D102
        if name != MODULE or self.finding:
            return None
        self.finding = True
        try:
            spec = importlib.util.find_spec(name)
        finally:
            self.finding = False
        if spec is not None and spec.loader is not None:
            spec.loader = _ExecWithoutBuild(spec.loader)
        return spec


def _step_aside() -> None:
    sys.meta_path[:] = [finder for finder in sys.meta_path if not isinstance(finder, _UnifiedMemoryWithoutBuild)]


def skip_unified_memory_build_on_import() -> None:
    """
    Patch `unified_memory_not_built_at_import`, before megatron.core is first imported.

    Upstream: megatron/core/inference/unified_memory.py builds a CUDA allocator with
    `torch.utils.cpp_extension.load_inline` in its module body, and megatron/core/__init__.py imports it (through
    inference_params -> inference.contexts -> dynamic_context) whatever the process does. Symptom: no error; every
    process that imports megatron.core (every rank of every run) runs that ninja build first. On the H100 nodes it
    fails after ~15 s each time (upstream warns "Failed to create unified memory mempool.", and a failed build is
    not cached), which was half of the first training step there; on a CPU torch it fails at once. Fix: while that
    module's body runs, `load_inline` raises as a failed build does, so the module ends as upstream's does where the
    build fails: `has_unified_memory` False, the same warning. Where the build would succeed, the allocator is off
    too: only Megatron's dynamic inference context with unified memory reads it, and it then gets what it gets where
    the build fails; nothing in NeMo's training, or in the example, reads it. A process that needs it sets
    `BIONEMO_BRIDGE_SKIP=unified_memory_not_built_at_import`."""
    if skipped(PATCH) or MODULE in sys.modules:
        return
    if not any(isinstance(finder, _UnifiedMemoryWithoutBuild) for finder in sys.meta_path):
        sys.meta_path.insert(0, _UnifiedMemoryWithoutBuild())
