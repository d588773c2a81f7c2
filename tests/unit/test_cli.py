"""Specification: what `bionemo-mnist` sets up for a run before it parses its arguments."""

import os

import pytest

from bionemo.example_model import cli


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
