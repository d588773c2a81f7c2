"""Specification of `bionemo.example_model.checkpoints`: a bad `initial_ckpt_path` is one clear `CheckpointError`,
and a good one loads the weights it has into the model, leaving skipped (new) layers freshly initialised.

The checkpoints here are real Megatron distributed checkpoints written the way NeMo2 writes them: every key under
the `module.` prefix of NeMo's MegatronParallel wrapper, in `weights/`, next to a `context/` directory.
"""

import contextlib
import logging
import queue
import shutil
from pathlib import Path

import pytest
import torch
from nemo.lightning.io.mixin import IOMixin
from torch import nn

from bionemo.example_model.bridges import cpu as cpu_bridges
from bionemo.example_model.checkpoints import CheckpointError, check_initial_checkpoint, checkpoint_tensor_shapes
from bionemo.example_model.config import ExampleFineTuneBothConfig, ExampleFineTuneConfig, PretrainConfig
from bionemo.example_model.errors import ExampleModelError
from bionemo.example_model.model import ExampleFineTuneModel, ExampleModel

PRETRAIN_SHAPES = {
    "linear1.weight": (64, 784),
    "linear1.bias": (64,),
    "linear2.weight": (3, 64),
    "linear2.bias": (3,),
    "linear3.weight": (64, 3),
    "linear3.bias": (64,),
    "linear4.weight": (784, 64),
    "linear4.bias": (784,),
}


def save_nemo2_checkpoint(model: nn.Module, path: Path) -> Path:
    """
    Save `model` as NeMo2 does: Megatron dist-checkpoint of `module.<name>` keys in weights/, plus the context/ that
    NeMo restores the model's config from (a `TrainerContext` of a module wrapping `model.config`)."""
    from megatron.core import dist_checkpointing
    from nemo import lightning as nl
    from nemo.lightning.io.pl import TrainerContext

    from bionemo.example_model.module import BionemoLightningModule

    (path / "weights").mkdir(parents=True)
    # NeMo's MegatronParallel asks its module for `sharded_state_dict(prefix="module.")`: dict keys and the
    # ShardedTensors' own keys (what is written) both get the prefix; bionemo-llm's loader adds it back on load.
    dist_checkpointing.save(model.sharded_state_dict(prefix="module."), str(path / "weights"))
    trainer = nl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False)
    context = TrainerContext(model=BionemoLightningModule(model.config), trainer=trainer, extra={})
    context.io_dump(path / "context", yaml_attrs=[])
    return path


class Saved:
    """The checkpoints written once for this module, and the weights they hold."""

    pretrain: Path
    pretrain_weights: dict[str, torch.Tensor]
    wide: Path  # an autoencoder whose linear1 has 65 units instead of 64


@pytest.fixture(scope="module", autouse=True)
def megatron_checkpoint_io_on_this_device():
    """Megatron's checkpoint writer and reader call torch.cuda (synchronize, current_device): on a CPU-only torch,
    the CPU bridge's stand-ins serve them while this module runs, and are gone after it."""
    with contextlib.nullcontext() if torch.cuda.is_available() else cpu_bridges.cuda_on_cpu_for_a_moment():
        yield


@pytest.fixture(scope="module")
def saved(megatron_single_process, tmp_path_factory) -> Saved:
    root = tmp_path_factory.mktemp("checkpoints")
    out = Saved()
    with pytest.MonkeyPatch.context() as patch:
        # Megatron hands each write's result back through a multiprocessing Manager queue; the first `put` makes that
        # spawned manager import torch (~7 s here). A synchronous save puts and gets in this process, so an in-process
        # queue is equivalent (raising=True: fails loudly if Megatron renames the global).
        from megatron.core.dist_checkpointing.strategies import filesystem_async

        patch.setattr(filesystem_async, "_results_queue", queue.Queue(), raising=True)
        # context/model.yaml needs nemo_run, which is not installed; io.json (what is loaded back) does not.
        patch.setattr(IOMixin, "_io_dump_yaml", lambda self, io, attrs: {}, raising=True)
        torch.manual_seed(1234)
        model = PretrainConfig().configure_model()
        out.pretrain = save_nemo2_checkpoint(model, root / "pretrain")
        out.pretrain_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
        wide = ExampleModel(PretrainConfig())
        wide.linear1 = nn.Linear(784, 65)
        out.wide = save_nemo2_checkpoint(wide, root / "wide")
    return out


def test_checkpoint_error_is_an_example_model_error():
    assert issubclass(CheckpointError, ExampleModelError)
    assert issubclass(CheckpointError, ValueError)


def test_checkpoint_tensor_shapes_lists_every_weight_without_the_nemo_prefix(saved):
    assert checkpoint_tensor_shapes(saved.pretrain) == PRETRAIN_SHAPES
    assert checkpoint_tensor_shapes(str(saved.pretrain)) == PRETRAIN_SHAPES


def test_checkpoint_tensor_shapes_reports_the_saved_not_the_expected_shapes(saved):
    shapes = checkpoint_tensor_shapes(saved.wide)
    assert shapes["linear1.weight"] == (65, 784)
    assert shapes["linear1.bias"] == (65,)


# --------------------------------------------------------------------------------------------------------------------
# Paths that are not a checkpoint


def test_a_path_that_does_not_exist_is_a_checkpoint_error_naming_the_path(tmp_path):
    missing = tmp_path / "no" / "such-checkpoint"
    with pytest.raises(CheckpointError, match="does not exist") as error:
        check_initial_checkpoint(ExampleModel(PretrainConfig()), missing, [])
    assert str(missing) in str(error.value)
    assert not missing.exists()


def test_a_directory_that_is_not_a_checkpoint_is_a_checkpoint_error(tmp_path):
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="is not a NeMo2 checkpoint") as error:
        check_initial_checkpoint(ExampleModel(PretrainConfig()), tmp_path, [])
    assert str(tmp_path) in str(error.value)
    assert "Checkpoints below it" not in str(error.value)


def test_a_checkpoint_without_context_is_not_a_checkpoint(saved, tmp_path):
    weights_only = tmp_path / "weights-only"
    shutil.copytree(saved.pretrain / "weights", weights_only / "weights")
    with pytest.raises(CheckpointError, match="is not a NeMo2 checkpoint"):
        check_initial_checkpoint(ExampleModel(PretrainConfig()), weights_only, [])


def test_the_weights_subdirectory_itself_is_not_a_checkpoint(saved):
    with pytest.raises(CheckpointError, match="is not a NeMo2 checkpoint"):
        check_initial_checkpoint(ExampleModel(PretrainConfig()), saved.pretrain / "weights", [])


def test_a_run_directory_error_lists_the_checkpoints_below_it(saved, tmp_path):
    run = tmp_path / "run"
    found = [run / "checkpoints" / name for name in ("epoch=0-step=9-consumed_samples=1280", "epoch=0-step=9-last")]
    for ckpt in found:
        shutil.copytree(saved.pretrain, ckpt)
    with pytest.raises(CheckpointError, match="checkpoints below it") as error:
        check_initial_checkpoint(ExampleModel(PretrainConfig()), run, [])
    for ckpt in found:
        assert str(ckpt) in str(error.value)
    check_initial_checkpoint(ExampleModel(PretrainConfig()), found[-1], [])  # and each listed path is accepted


def test_a_checkpoint_whose_context_nemo_failed_to_write_is_a_checkpoint_error_naming_it(saved, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(saved.pretrain, broken)
    (broken / "context" / "io.json").write_text("")  # what NeMo leaves when it cannot serialise the run
    with pytest.raises(CheckpointError, match="no readable context/io.json"):
        PretrainConfig(initial_ckpt_path=str(broken)).configure_model()


# --------------------------------------------------------------------------------------------------------------------
# Checkpoints that do not fit the model


def test_a_skip_prefix_that_matches_no_weight_is_a_checkpoint_error_naming_it(saved):
    with pytest.raises(CheckpointError, match="'digit_clasifier'") as error:
        check_initial_checkpoint(ExampleFineTuneModel(ExampleFineTuneConfig()), saved.pretrain, ["digit_clasifier"])
    assert "match no weight" in str(error.value)
    assert "ExampleFineTuneModel" in str(error.value)


def test_a_misspelt_skip_prefix_fails_configure_model_before_loading_anything(saved):
    config = ExampleFineTuneConfig(
        initial_ckpt_path=str(saved.pretrain), initial_ckpt_skip_keys_with_these_prefixes=["digit_clasifier"]
    )
    with pytest.raises(CheckpointError, match="digit_clasifier"):
        config.configure_model()


def test_a_new_head_without_its_skip_prefix_does_not_fit_and_is_named(saved):
    with pytest.raises(CheckpointError, match="does not fit ExampleFineTuneModel") as error:
        check_initial_checkpoint(ExampleFineTuneModel(ExampleFineTuneConfig()), saved.pretrain, [])
    message = str(error.value)
    assert "missing ['digit_classifier.bias', 'digit_classifier.weight']" in message
    assert "initial_ckpt_skip_keys_with_these_prefixes" in message  # says how to fix it


def test_configure_model_without_the_skip_prefix_raises_the_same_error(saved):
    config = ExampleFineTuneConfig(initial_ckpt_path=str(saved.pretrain))  # the default skips nothing
    with pytest.raises(CheckpointError, match="does not fit.*digit_classifier"):
        config.configure_model()


def test_a_layer_of_another_shape_is_a_checkpoint_error_mentioning_the_shapes(saved):
    with pytest.raises(CheckpointError, match="does not fit ExampleModel") as error:
        check_initial_checkpoint(ExampleModel(PretrainConfig()), saved.wide, [])
    message = str(error.value)
    assert "shape (checkpoint vs model)" in message
    assert "linear1.weight (65, 784) vs (64, 784)" in message
    assert "linear1.bias (65,) vs (64,)" in message
    assert "missing" not in message


def test_configure_model_refuses_a_checkpoint_of_another_shape(saved):
    with pytest.raises(CheckpointError, match="shape"):
        PretrainConfig(initial_ckpt_path=str(saved.wide)).configure_model()


def test_a_skipped_layer_of_another_shape_is_fine(saved):
    check_initial_checkpoint(ExampleModel(PretrainConfig()), saved.wide, ["linear1"])


# --------------------------------------------------------------------------------------------------------------------
# Checkpoints that fit: loading


def test_the_pretrain_checkpoint_fits_the_autoencoder_and_with_the_skip_the_classifier(saved):
    assert check_initial_checkpoint(ExampleModel(PretrainConfig()), saved.pretrain, []) is None
    assert (
        check_initial_checkpoint(ExampleFineTuneModel(ExampleFineTuneConfig()), saved.pretrain, ["digit_classifier"])
        is None
    )


def test_finetune_from_pretrain_loads_the_trunk_and_initialises_a_fresh_classifier(saved):
    torch.manual_seed(99)
    loaded = ExampleFineTuneConfig(
        initial_ckpt_path=str(saved.pretrain), initial_ckpt_skip_keys_with_these_prefixes=["digit_classifier"]
    ).configure_model()
    torch.manual_seed(99)
    fresh = ExampleFineTuneConfig().configure_model()  # same seed, no checkpoint: what the layers would be unloaded

    assert type(loaded) is ExampleFineTuneModel
    for name in ("linear1.weight", "linear1.bias", "linear2.weight", "linear2.bias"):
        assert torch.equal(loaded.get_parameter(name), saved.pretrain_weights[name]), name
        assert not torch.equal(fresh.get_parameter(name), saved.pretrain_weights[name]), name
    for name in ("digit_classifier.weight", "digit_classifier.bias"):
        assert torch.equal(loaded.get_parameter(name), fresh.get_parameter(name)), name
        assert not any(
            t.shape == loaded.get_parameter(name).shape and torch.equal(t, loaded.get_parameter(name))
            for t in saved.pretrain_weights.values()
        )


def test_finetune_both_from_pretrain_loads_encoder_and_decoder(saved):
    loaded = ExampleFineTuneBothConfig(
        initial_ckpt_path=str(saved.pretrain), initial_ckpt_skip_keys_with_these_prefixes=["digit_classifier"]
    ).configure_model()
    for name, weight in saved.pretrain_weights.items():
        assert torch.equal(loaded.state_dict()[name], weight), name
    assert loaded.digit_classifier.weight.shape == (10, 3)


def test_pretrain_from_its_own_checkpoint_restores_every_weight(saved):
    torch.manual_seed(5)
    loaded = PretrainConfig(initial_ckpt_path=str(saved.pretrain)).configure_model()
    assert set(loaded.state_dict()) == set(saved.pretrain_weights)
    for name, weight in saved.pretrain_weights.items():
        assert torch.equal(loaded.state_dict()[name], weight), name


# --------------------------------------------------------------------------------------------------------------------
# No silent untrained head


def fresh_weight_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "left at their initial values" in r.getMessage()]


def test_a_config_that_skips_weights_says_in_one_line_which_were_left_at_their_initial_values(saved, caplog):
    config = ExampleFineTuneConfig(
        initial_ckpt_path=str(saved.pretrain), initial_ckpt_skip_keys_with_these_prefixes=["digit_classifier"]
    )
    with caplog.at_level(logging.WARNING, logger="bionemo.example_model"):
        config.configure_model()
    (line,) = fresh_weight_warnings(caplog)
    assert "ExampleFineTuneModel" in line and "digit_classifier.bias, digit_classifier.weight" in line


def test_a_config_that_loads_every_weight_warns_of_none(saved, caplog):
    with caplog.at_level(logging.WARNING, logger="bionemo.example_model"):
        PretrainConfig(initial_ckpt_path=str(saved.pretrain)).configure_model()
    assert fresh_weight_warnings(caplog) == []


def test_predict_refuses_a_config_that_would_leave_weights_untrained(saved):
    from bionemo.example_model.train import TrainOptions, predict

    config = ExampleFineTuneConfig(
        initial_ckpt_path=str(saved.pretrain), initial_ckpt_skip_keys_with_these_prefixes=["digit_classifier"]
    )
    with pytest.raises(ExampleModelError, match="predict needs every weight from the checkpoint"):
        predict(config, TrainOptions(accelerator="cpu"))
