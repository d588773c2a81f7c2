"""Specification: `bionemo-mnist`'s flags, and what it sets up for a run before it parses them."""

import os
import subprocess
import sys

import pytest

from bionemo.example_model import cli
from bionemo.example_model.errors import ExampleModelError
from bionemo.example_model.options import TrainOptions, command_line_options


def test_a_run_asks_mkl_for_reproducible_kernels_when_the_user_chose_none(monkeypatch):
    monkeypatch.delenv("MKL_CBWR", raising=False)
    cli.reproducible_cpu_math()
    assert os.environ["MKL_CBWR"] == "AUTO,STRICT"


def test_a_run_keeps_the_mkl_mode_the_user_chose(monkeypatch):
    monkeypatch.setenv("MKL_CBWR", "COMPATIBLE")
    cli.reproducible_cpu_math()
    assert os.environ["MKL_CBWR"] == "COMPATIBLE"


def test_the_command_line_sets_the_mode_before_it_even_parses_its_arguments(monkeypatch):
    monkeypatch.delenv("MKL_CBWR", raising=False)
    with pytest.raises(SystemExit):  # argparse's answer to an unknown command
        cli.main(["no-such-command"])
    assert os.environ["MKL_CBWR"] == "AUTO,STRICT"


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


def test_options_refuse_a_learning_rate_too_large_for_adams_float32_step():
    with pytest.raises(ExampleModelError, match="float32"):
        TrainOptions(lr=1e38).check()
