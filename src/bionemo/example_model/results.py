"""What `predict` returns, every test item once in dataset order, and the check that it is so."""

from dataclasses import dataclass
from typing import Sequence

import torch

__all__: Sequence[str] = ("Predictions", "check_each_item_once")


@dataclass
class Predictions:
    """Every test item once, in dataset order: its index, true label and predicted digit."""

    idx: torch.Tensor
    label: torch.Tensor
    prediction: torch.Tensor

    @property
    def accuracy(self) -> float:  # noqa: D102
        return (self.label == self.prediction).float().mean().item()


def check_each_item_once(idx: torch.Tensor, num_items: int) -> None:
    """Raise unless the sorted indices `idx` are exactly 0 .. num_items - 1: no item missing, repeated or foreign."""
    if not torch.equal(idx, torch.arange(num_items)):
        raise RuntimeError(
            f"predictions hold {len(idx)} indices, not each of the {num_items} test items exactly once; this is a bug"
        )
