"""
Training-loader throughput, per batch, at micro batch 128 and 1024 (CPU):

(a) ours: `MNISTDataModule.mnist_train` (a `MnistResampler`) in a plain DataLoader with `collate_microbatch`,
    so each batch is one `__getitems__` call (vectorised permutation + one gather);
(b) original: torchvision `MNISTCustomDataset` + `ToTensor` per item, in bionemo-core's
    `IdentityMultiEpochDatasetWrapper` + `MultiEpochDatasetResampler(shuffle=True)`, default collate;
(c) reference floor: `images[idx].float().div(255)` from a uint8 tensor with pre-drawn random idx.

Each benchmark round fetches one batch from a live iterator (consecutive batches, re-created when exhausted).
Time to first batch (construction + first batch) is measured for (a) and (b). A correctness test checks that (a)
yields bit-for-bit what the per-item original path yields for the same global sample indices.
"""

import itertools
import time

import pytest
import torch
from bionemo.core.data.multi_epoch_dataset import IdentityMultiEpochDatasetWrapper, MultiEpochDatasetResampler
from torch.utils.data import DataLoader, default_collate, random_split
from torchvision.transforms import ToTensor

import bionemo.example_model  # noqa: F401  (first: before torchvision/lightning)
from bionemo.example_model.data import MNISTCustomDataset, MNISTDataModule, collate_microbatch

BATCHES = [128, 1024]
# Rounds are small: the CI/dev machine has 2 shared cores. The original path costs ~0.1 ms per item.
ROUNDS = {"ours": {128: 200, 1024: 60}, "original": {128: 15, 1024: 4}, "gather": {128: 300, 1024: 80}}


class _Cycle:
    """next() over a DataLoader, starting a new pass when one ends (so rounds see consecutive batches)."""

    def __init__(self, loader: DataLoader) -> None:
        self.loader = loader
        self.it = iter(loader)

    def __call__(self):
        try:
            return next(self.it)
        except StopIteration:
            self.it = iter(self.loader)
            return next(self.it)


def _ours_loader(root, batch: int) -> DataLoader:
    dm = MNISTDataModule(data_dir=root, batch_size=batch)
    dm.setup()
    dataset = dm.mnist_train  # no trainer: sized to one epoch
    return DataLoader(dataset, batch_size=batch, collate_fn=collate_microbatch)


def _original_loader(root, batch: int) -> DataLoader:
    base = MNISTCustomDataset(str(root), train=True, transform=ToTensor())
    resampler = MultiEpochDatasetResampler(IdentityMultiEpochDatasetWrapper(base), shuffle=True)
    return DataLoader(resampler, batch_size=batch, num_workers=0)


@pytest.mark.parametrize("batch", BATCHES)
def test_loader_ours(benchmark, mnist_root, batch):
    benchmark.group = f"loader-b{batch}"
    fetch = _Cycle(_ours_loader(mnist_root, batch))
    out = benchmark.pedantic(fetch, rounds=ROUNDS["ours"][batch], iterations=1, warmup_rounds=3)
    assert out["data"].shape == (batch, 1, 28, 28)
    benchmark.extra_info.update(path="ours", batch=batch, what="one train batch from a live DataLoader iterator")


@pytest.mark.parametrize("batch", BATCHES)
def test_loader_original(benchmark, mnist_root, batch):
    benchmark.group = f"loader-b{batch}"
    fetch = _Cycle(_original_loader(mnist_root, batch))
    out = benchmark.pedantic(fetch, rounds=ROUNDS["original"][batch], iterations=1, warmup_rounds=1)
    assert out["data"].shape == (batch, 1, 28, 28)
    benchmark.extra_info.update(path="original", batch=batch, what="one train batch, per-item torchvision path")


@pytest.mark.parametrize("batch", BATCHES)
def test_loader_gather(benchmark, mnist_root, batch):
    benchmark.group = f"loader-b{batch}"
    dataset = MNISTCustomDataset(str(mnist_root), train=True)
    images = dataset.data.contiguous()
    gen = torch.Generator().manual_seed(0)
    idx = [torch.randint(len(images), (batch,), generator=gen) for _ in range(64)]
    pool = itertools.cycle(idx)

    def gather():
        return images[next(pool)].float().div(255)

    out = benchmark.pedantic(gather, rounds=ROUNDS["gather"][batch], iterations=1, warmup_rounds=3)
    assert out.shape == (batch, 28, 28)
    benchmark.extra_info.update(path="gather", batch=batch, what="images[idx].float().div(255), pre-drawn idx")


@pytest.mark.parametrize("path", ["ours", "original"])
def test_time_to_first_batch(benchmark, mnist_root, path):
    """Construction (datamodule setup / torchvision dataset + wrappers) + DataLoader + first batch, at batch 128."""
    benchmark.group = "time-to-first-batch-b128"
    make = _ours_loader if path == "ours" else _original_loader

    def first():
        return next(iter(make(mnist_root, 128)))

    out = benchmark.pedantic(first, rounds=3, iterations=1, warmup_rounds=1)
    assert out["data"].shape == (128, 1, 28, 28)
    benchmark.extra_info.update(path=path, batch=128, what="build loader from files on disk + first batch")


@pytest.mark.parametrize("batch", [128, 1024])
def test_ours_matches_original_per_item(mnist_root, batch):
    """The first batches of (a) equal, bitwise, the per-item original path's items for the same global indices."""
    num_batches = 3 if batch == 128 else 1
    dm = MNISTDataModule(data_dir=mnist_root, batch_size=batch)
    dm.setup()
    ours = dm.mnist_train
    loader = DataLoader(ours, batch_size=batch, collate_fn=collate_microbatch)

    # The original example's recipe: random_split 55,000/5,000 with seed 42, the train part shuffled with seed 44.
    full = MNISTCustomDataset(str(mnist_root), train=True, transform=ToTensor())
    base, _ = random_split(full, [55000, 5000], generator=torch.Generator().manual_seed(42))
    original = MultiEpochDatasetResampler(
        IdentityMultiEpochDatasetWrapper(base), num_samples=len(ours), shuffle=True, seed=44
    )
    assert len(original) == len(ours)

    start = time.perf_counter()
    for b, got in enumerate(itertools.islice(loader, num_batches)):
        want = default_collate([original[i] for i in range(b * batch, (b + 1) * batch)])
        assert got["data"].dtype == want["data"].dtype == torch.float32
        assert torch.equal(got["data"].view(torch.int32), want["data"].view(torch.int32)), f"pixels differ, batch {b}"
        assert torch.equal(got["label"], want["label"]), f"labels differ, batch {b}"
        assert torch.equal(got["idx"], want["idx"]), f"items differ, batch {b}"
    assert time.perf_counter() - start < 120
