"""
The tracked benchmark ratios, in one table: summarize.py computes them and records their targets, compare.py checks
them in their direction, plot.py draws them. A new tracked ratio is one row here plus its computation in summarize.py.
"""

from typing import NamedTuple


class Ratio(NamedTuple):
    """A ratio measured in one run against a reference measured in the same run."""

    name: str
    higher_is_better: bool
    target: float | None  # None: tracked for regressions, no target
    label: str

    @property
    def target_text(self) -> str | None:
        """The target as summaries print it, e.g. ">= 50"."""
        return None if self.target is None else f"{'>=' if self.higher_is_better else '<='} {self.target:g}"


RATIOS: tuple[Ratio, ...] = (
    Ratio("loader_speedup_vs_original", True, 50, "loader speedup vs original (b128)"),
    Ratio("loader_ratio_vs_gather", False, 2, "loader / raw gather (b128)"),
    Ratio("step_ratio_vs_raw_b128", False, 2, "megatron / raw step (b128)"),
    Ratio("step_ratio_vs_raw_b8192", False, None, "megatron / raw step (b8192)"),
    Ratio("throughput_fraction_b8192", True, 0.5, "share of raw throughput kept (b8192)"),
    Ratio("dp2_scaling_b128", True, None, "2-rank / 1-rank samples/s (b128 per rank, 2 is perfect)"),
)
