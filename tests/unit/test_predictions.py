"""Specification of predict's own check that the gathered predictions cover the test split exactly."""

import pytest
import torch

from bionemo.example_model.results import check_each_item_once


def test_every_item_of_the_split_once_passes():
    check_each_item_once(torch.arange(10_000), 10_000)


@pytest.mark.parametrize(
    "idx",
    [
        torch.arange(9_999),  # the last item missing: no gap, only short
        torch.arange(1, 10_000),  # the first missing
        torch.cat([torch.arange(5_000), torch.arange(5_000)]).sort().values,  # half, twice over
        torch.arange(10_001),  # one item more than the split holds
    ],
    ids=["short-by-the-last", "short-by-the-first", "half-twice", "one-too-many"],
)
def test_predictions_that_do_not_cover_the_split_exactly_once_are_a_bug(idx):
    with pytest.raises(RuntimeError, match="not each of the 10000 test items exactly once"):
        check_each_item_once(idx, 10_000)
