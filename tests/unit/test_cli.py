"""Specification: `bionemo-mnist`'s flags, and what it sets up for a run before it parses them."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bionemo.example_model import cli
from bionemo.example_model.errors import ExampleModelError
from bionemo.example_model.options import GLOBAL_BATCH, TrainOptions, command_line_options

REPRODUCIBILITY_VARIABLES = ("MKL_CBWR", "MKL_DYNAMIC", "OMP_DYNAMIC")


@pytest.fixture
def no_reproducibility_settings(monkeypatch):
    """None of MKL's reproducibility variables set, and after the test each is as before: set first, so that
    monkeypatch records its value (a bare `delenv` of an unset variable records nothing, and what the code under
    test then sets would leak into every later test's subprocesses)."""
    for name in REPRODUCIBILITY_VARIABLES:
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    return monkeypatch


@pytest.mark.parametrize(
    ("vendor", "mode"), [("GenuineIntel", "AUTO,STRICT"), ("AuthenticAMD", "COMPATIBLE"), (None, "COMPATIBLE")]
)
def test_a_run_asks_mkl_for_its_reproducible_mode_for_the_cpu_it_runs_on(no_reproducibility_settings, vendor, mode):
    no_reproducibility_settings.setattr(cli, "cpu_info", lambda: {"vendor_id": vendor} if vendor else {})
    cli.reproducible_cpu_math()
    assert os.environ["MKL_CBWR"] == mode


def test_a_run_keeps_mkl_and_openmp_from_changing_the_thread_count_under_load(no_reproducibility_settings):
    cli.reproducible_cpu_math()
    assert (os.environ["MKL_DYNAMIC"], os.environ["OMP_DYNAMIC"]) == ("FALSE", "FALSE")


def test_the_cpu_vendor_is_the_one_linux_reports():
    vendor = cli.cpu_info()["vendor_id"]
    assert vendor and f"vendor_id\t: {vendor}\n" in Path("/proc/cpuinfo").read_text()


def test_a_run_keeps_the_settings_the_user_chose(no_reproducibility_settings):
    for name in REPRODUCIBILITY_VARIABLES:
        no_reproducibility_settings.setenv(name, "user's")
    cli.reproducible_cpu_math()
    assert all(os.environ[name] == "user's" for name in REPRODUCIBILITY_VARIABLES)


def test_the_command_line_sets_them_before_it_even_parses_its_arguments(no_reproducibility_settings):
    with pytest.raises(SystemExit):  # argparse's answer to an unknown command
        cli.main(["no-such-command"])
    assert all(name in os.environ for name in REPRODUCIBILITY_VARIABLES)


# --------------------------------------------------------------------------------------------------------------------
# The flags are TrainOptions' fields


@pytest.mark.parametrize("command", ["pipeline", "pretrain", "finetune", "predict"])
def test_every_command_offers_each_option_field_as_a_flag_with_the_fields_default(command, tmp_path):
    required = {"finetune": ["--pretrain-ckpt", str(tmp_path)], "predict": ["--finetune-ckpt", str(tmp_path)]}
    args = cli.build_parser().parse_args([command, *required.get(command, [])])
    defaults = TrainOptions()
    assert command_line_options(), "no option field is a flag"
    for option in command_line_options():
        assert getattr(args, option.name) == getattr(defaults, option.name), option.name


def test_a_flag_sets_its_field(tmp_path):
    args = cli.build_parser().parse_args(
        ["pretrain", "--log-every-n-steps", "7", "--use-distributed-optimizer", "--data-dir", str(tmp_path)]
    )
    assert (args.log_every_n_steps, args.use_distributed_optimizer, args.data_dir) == (7, True, tmp_path)


def test_options_and_their_flags_import_no_torch():
    code = "import sys; import bionemo.example_model.cli; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("max_steps", 0),
        ("micro_batch_size", 2.0),
        ("devices", True),
        ("num_workers", -1),
        ("lr", float("nan")),
        ("precision", "16"),
        ("accelerator", "tpu"),
    ],
)
def test_an_impossible_option_value_is_one_error_naming_the_option(option, value):
    with pytest.raises(ExampleModelError, match=rf"^{option}\b.*{value!r}"):
        TrainOptions(**{option: value}).check()


def test_options_refuse_a_learning_rate_too_large_for_adams_float32_step():
    with pytest.raises(ExampleModelError, match="float32"):
        TrainOptions(lr=1e38).check()


def test_a_stage_records_the_global_batch_and_each_flag_its_weights_depend_on_by_its_flag_name():
    options = TrainOptions(micro_batch_size=32, devices=2, accumulate_grad_batches=2, lr=0.01, seed=3)
    settings = options.result_settings()
    assert settings == {
        GLOBAL_BATCH: 128,
        "--lr": 0.01,
        "--precision": "32",
        "--use-distributed-optimizer": False,
        "--seed": 3,
    }


def test_splitting_the_same_global_batch_otherwise_records_the_same_settings():
    """A resume may change ranks, microbatches and accumulation (a distributed-optimizer checkpoint reshards)."""
    split = TrainOptions(micro_batch_size=16, devices=2, accumulate_grad_batches=4, num_workers=2, log_every_n_steps=1)
    assert split.result_settings() == TrainOptions(micro_batch_size=128).result_settings()


@pytest.mark.parametrize(
    ("val_check_interval", "max_steps", "interval"), [(500, 2000, 500), (500, 500, 500), (500, 300, 300)]
)
def test_the_checkpoint_interval_is_val_check_interval_but_never_past_max_steps(
    val_check_interval, max_steps, interval
):
    options = TrainOptions(val_check_interval=val_check_interval, max_steps=max_steps)
    assert options.checkpoint_interval == interval
