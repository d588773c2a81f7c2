"""Specification of the original example's contract (bionemo-framework 9781805f1, `lightning_basic` and its three
scripts): its names, signatures, defaults and return types, and its data stream, item for item.

The reference for the data stream is the original's own construction, written out here from torchvision and
bionemo-core: `random_split` of the 60,000 training images into 55,000/5,000 with seed 42, then
`MultiEpochDatasetResampler(IdentityMultiEpochDatasetWrapper(...))` with seeds 44 (train, shuffled), 45 (val) and
43 (test), over the per-item `MNISTCustomDataset` with `ToTensor`.
"""

import inspect
import shutil

import pytest
import torch
from bionemo.core import BIONEMO_CACHE_DIR
from bionemo.core.data.multi_epoch_dataset import IdentityMultiEpochDatasetWrapper, MultiEpochDatasetResampler
from bionemo.llm.model.config import OVERRIDE_BIONEMO_CONFIG_DEFAULTS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nemo.lightning.pytorch.callbacks import ModelCheckpoint
from nemo.lightning.pytorch.plugins import MegatronDataSampler
from torch import nn
from torch.utils.data import default_collate, random_split
from torchvision.transforms import ToTensor

from bionemo.example_model.lightning import lightning_basic as lb
from bionemo.example_model.mnist_files import raw_dir
from bionemo.example_model.training_scripts import finetune_mnist, predict_mnist, pretrain_mnist

ORIGINAL_NAMES = [
    "BionemoLightningModule",
    "ClassifierLossReduction",
    "ExampleFineTuneBothConfig",
    "ExampleFineTuneBothModel",
    "ExampleFineTuneConfig",
    "ExampleFineTuneModel",
    "ExampleFineTuneOutput",
    "ExampleGenericConfig",
    "ExampleModel",
    "ExampleModelOutput",
    "ExampleModelT",
    "ExampleModelTrunk",
    "MNISTCustomDataset",
    "MNISTDataModule",
    "MSELossReduction",
    "MSEPlusClassifierLossReduction",
    "MnistItem",
    "PretrainConfig",
    "SameSizeLossDict",
    "checkpoint_callback",
    "data_module",
]


def parameters(fn) -> list[tuple[str, object]]:
    """(name, default) of each parameter, `inspect.Parameter.empty` where there is none."""
    return [(p.name, p.default) for p in inspect.signature(fn).parameters.values()]


# --------------------------------------------------------------------------------------------------------------------
# Names and signatures


@pytest.mark.parametrize("name", ORIGINAL_NAMES)
def test_every_original_name_is_importable_from_lightning_basic(name):
    assert hasattr(lb, name)
    assert name in lb.__all__


def test_the_data_module_keeps_the_original_five_arguments_and_defaults_and_adds_only_keywords():
    params = inspect.signature(lb.MNISTDataModule.__init__).parameters
    positional = [(p.name, p.default) for p in params.values() if p.kind is p.POSITIONAL_OR_KEYWORD][1:]
    assert positional == [
        ("data_dir", str(BIONEMO_CACHE_DIR)),
        ("batch_size", 32),
        ("num_workers", 0),
        ("global_batch_size", None),
        ("output_log", True),
    ]
    assert all(p.kind is p.KEYWORD_ONLY for p in list(params.values())[6:])


def test_the_data_module_has_the_original_attributes():
    dm = lb.MNISTDataModule(data_dir="somewhere", batch_size=64, output_log=False)
    assert (dm.data_dir, dm.micro_batch_size, dm.global_batch_size, dm.num_workers) == ("somewhere", 64, 64, 0)
    assert (dm.max_len, dm.seq_length, dm.rampup_batch_size) == (1048, 1048, None)
    assert isinstance(dm.data_sampler, MegatronDataSampler)
    assert dm.data_sampler.micro_batch_size == 64 and dm.data_sampler.output_log is False
    assert lb.MNISTDataModule(batch_size=8, global_batch_size=32).global_batch_size == 32


def test_the_ready_data_module_and_checkpoint_callback_are_the_originals():
    assert isinstance(lb.data_module, lb.MNISTDataModule)
    assert (lb.data_module.data_dir, lb.data_module.micro_batch_size) == (str(BIONEMO_CACHE_DIR), 128)
    ckpt = lb.checkpoint_callback
    assert isinstance(ckpt, ModelCheckpoint)
    assert (ckpt.save_last, ckpt.monitor, ckpt._save_on_train_epoch_end) == (True, "val_loss", True)
    assert ckpt.always_save_context is True


def test_the_lightning_module_defaults_to_the_original_optimizer():
    module = lb.BionemoLightningModule(config=lb.PretrainConfig())
    optim = module.optim.config
    assert (optim.optimizer, optim.lr, optim.use_distributed_optimizer) == ("adam", 1e-4, True)
    assert [name for name, _ in parameters(lb.BionemoLightningModule.__init__)][:2] == ["self", "config"]
    assert module.vp_stage is None
    assert module.loss_reduction_class() is lb.MSELossReduction  # a method, as in the original
    assert isinstance(module.training_loss_reduction(), lb.MSELossReduction)


def test_training_step_returns_the_model_output_with_the_loss_of_a_subclasss_own_training_loss_reduction():
    """The original's `training_step` asks `training_loss_reduction()` for its reduction, even after NeMo's step made
    one: a subclass that overrides it (here calling the base one, then answering another) gets its own used."""
    made, called = [], []

    class Tracked(lb.MSELossReduction):
        def forward(self, batch, forward_out):
            called.append(self)
            return super().forward(batch, forward_out)

    class Own(lb.BionemoLightningModule):
        def training_loss_reduction(self):
            super().training_loss_reduction()
            made.append(Tracked())
            return made[-1]

    module = Own(config=lb.PretrainConfig())
    module.configure_model()
    batch = {"data": torch.rand(4, 1, 28, 28), "label": torch.arange(4), "idx": torch.arange(4)}
    nemos = module.training_loss_reduction()  # as NeMo's step does before calling training_step
    for _ in range(2):
        output = module.training_step(batch)
        assert set(output) == set(lb.ExampleModelOutput.__required_keys__) and output["x_hat"].shape == (4, 784)
    assert len(made) == 3 and called == made[1:] and nemos not in called


def test_the_configs_take_their_loss_not_the_checkpoints_and_skip_nothing_by_default():
    for config_cls in (lb.PretrainConfig, lb.ExampleFineTuneBothConfig, lb.ExampleFineTuneConfig):
        config = config_cls()
        assert config.override_parent_fields == [*OVERRIDE_BIONEMO_CONFIG_DEFAULTS, "loss_cls"]
        assert config.initial_ckpt_skip_keys_with_these_prefixes == []
        assert (config.hidden_size, config.num_attention_heads, config.num_layers) == (64, 1, 1)


def test_the_models_have_the_original_submodules_and_output_types():
    trunk = lb.ExampleModelTrunk(lb.PretrainConfig())
    assert isinstance(trunk.relu, nn.ReLU) and trunk.vp_stage is None
    assert isinstance(lb.ExampleModel(lb.PretrainConfig()).relu2, nn.ReLU)
    logits = lb.ExampleFineTuneModel(lb.ExampleFineTuneConfig())(torch.rand(5, 1, 28, 28))
    assert isinstance(logits, torch.Tensor) and logits.shape == (5, 10)
    assert issubclass(lb.ExampleFineTuneOutput, dict)
    assert lb.ExampleFineTuneOutput.__required_keys__ == {"x_hat", "z", "digit_logits"}
    assert lb.ExampleModelOutput.__required_keys__ <= lb.ExampleFineTuneOutput.__required_keys__


def test_the_classifier_loss_takes_the_logits_tensor_the_classifier_returns():
    batch = {"data": torch.rand(4, 1, 28, 28), "label": torch.tensor([1, 2, 3, 4]), "idx": torch.arange(4)}
    logits = torch.randn(4, 10)
    loss, record = lb.ClassifierLossReduction().forward(batch, logits)
    torch.testing.assert_close(loss, nn.functional.cross_entropy(logits, batch["label"]))
    torch.testing.assert_close(record["avg"], loss)


@pytest.mark.parametrize("reduction", [lb.MSELossReduction, lb.ClassifierLossReduction])
def test_reduce_of_records_that_carry_only_avg_is_the_original_mean_of_means(reduction):
    records = [{"avg": torch.tensor(1.0)}, {"avg": torch.tensor(2.0)}, {"avg": torch.tensor(6.0)}]
    assert reduction().reduce(records).item() == pytest.approx(3.0)


def test_the_scripts_keep_the_original_functions():
    no_default = inspect.Parameter.empty
    assert parameters(pretrain_mnist.run_pretrain) == [("name", no_default), ("directory_name", no_default)]
    assert parameters(finetune_mnist.run_finetune) == [
        ("checkpoint_dir", no_default),
        ("name", no_default),
        ("directory_name", no_default),
    ]
    assert parameters(predict_mnist.run_predict) == [("finetune_dir", no_default), ("test_length", no_default)]


# --------------------------------------------------------------------------------------------------------------------
# The per-item dataset and where it finds its files


def test_the_per_item_dataset_returns_ints_for_label_and_idx(mnist_root):
    item = lb.MNISTCustomDataset(str(mnist_root), train=False, transform=ToTensor())[7]
    assert set(item) == {"data", "label", "idx"}
    assert item["idx"] == 7 and isinstance(item["idx"], int) and isinstance(item["label"], int)
    assert item["data"].shape == (1, 28, 28)


def test_files_where_the_original_example_downloaded_them_are_found(mnist_root, tmp_path):
    shutil.copytree(raw_dir(mnist_root), tmp_path / "MNISTCustomDataset" / "raw")
    assert raw_dir(tmp_path) == tmp_path / "MNISTCustomDataset" / "raw"
    dm = lb.MNISTDataModule(data_dir=str(tmp_path))
    dm.setup("fit")
    assert not (tmp_path / "MNIST").exists()  # nothing prepared again
    assert len(dm.mnist_test) == 10000


def test_download_true_prepares_missing_files_offline(tmp_path):
    dataset = lb.MNISTCustomDataset(str(tmp_path), train=False, download=True)
    assert len(dataset) == 10000
    assert (tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte").is_file()


# --------------------------------------------------------------------------------------------------------------------
# The data stream, item for item


@pytest.fixture(scope="module")
def streams(mnist_root) -> dict[str, tuple]:
    """(ours, the original's) for train, val and test."""
    ours = lb.MNISTDataModule(data_dir=str(mnist_root))
    ours.setup("fit")

    def dataset(train: bool):
        return lb.MNISTCustomDataset(str(mnist_root), train=train, transform=ToTensor())

    train, val = random_split(dataset(True), [55000, 5000], generator=torch.Generator().manual_seed(42))
    original = {
        "train": MultiEpochDatasetResampler(IdentityMultiEpochDatasetWrapper(train), seed=44, shuffle=True),
        "val": MultiEpochDatasetResampler(IdentityMultiEpochDatasetWrapper(val), seed=45, shuffle=False),
        "test": MultiEpochDatasetResampler(IdentityMultiEpochDatasetWrapper(dataset(False)), seed=43, shuffle=False),
    }
    return {name: (getattr(ours, f"mnist_{name}"), original[name]) for name in original}


@st.composite
def split_and_indices(draw) -> tuple[str, list[int]]:
    name = draw(st.sampled_from(["train", "val", "test"]))
    length = {"train": 55000, "val": 5000, "test": 10000}[name]
    return name, draw(st.lists(st.integers(0, length - 1), min_size=1, max_size=16))


@settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=split_and_indices())
def test_the_default_streams_equal_the_originals_item_for_item(streams, case):
    name, indices = case
    ours, original = streams[name]
    assert len(ours) == len(original)
    got, want = ours.__getitems__(indices), default_collate([original[i] for i in indices])
    assert torch.equal(got["data"], want["data"]), name
    assert torch.equal(got["label"], want["label"]), name
    assert torch.equal(got["idx"], want["idx"]), name
