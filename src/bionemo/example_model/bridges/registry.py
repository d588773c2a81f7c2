"""
The patch registry: named patches, each installed at most once per process, each switchable off by name.

The switch exists for the canaries (tests/unit/test_bridges.py): with one patch off, a canary runs its scenario and
asserts that the upstream symptom the patch documents still appears.
"""

import os
from typing import Callable, Sequence

__all__: Sequence[str] = ("SKIP_ENV", "PatchSet", "skipped")

SKIP_ENV = "BIONEMO_BRIDGE_SKIP"


def skipped(name: str) -> bool:
    """Whether `BIONEMO_BRIDGE_SKIP` (a comma-separated list of patch names) switches the patch `name` off."""
    return name in {s.strip() for s in os.environ.get(SKIP_ENV, "").split(",") if s.strip()}


class PatchSet:
    """Named patches, each installed at most once per process unless switched off by `BIONEMO_BRIDGE_SKIP`."""

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
            if name not in self.installed and not skipped(name):
                patch()
                self.installed.append(name)
        return list(self.installed)
