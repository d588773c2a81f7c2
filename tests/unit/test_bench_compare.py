"""Specification of the benchmark regression check (benchmarks/compare.py): direction-aware, 10% unless the baseline
names a ratio's own tolerance."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parents[2] / "benchmarks"


def load(name: str):
    """A benchmarks/ script as a module, registered under its name (the scripts import `ratios` so)."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


load("ratios")  # the table the others import
compare, summarize = load("compare"), load("summarize")

BASE = {
    "loader_speedup_vs_original": 60.0,  # higher is better
    "loader_ratio_vs_gather": 1.0,  # lower is better
    "step_ratio_vs_raw_b128": 5.0,
    "step_ratio_vs_raw_b8192": None,  # not measured
    "throughput_fraction_b8192": 0.5,
    "dp2_scaling_b128": 1.9,
}


def summary(**ratios) -> dict:
    return {"machine_class": "cpu-2core", "step_ratio_stat": "min_ms", "ratios": {**BASE, **ratios}}


def status(rows, key: str) -> str:
    return next(r[-1] for r in rows if r[0] == key)


@pytest.mark.parametrize(
    ("key", "worse", "within"),
    [
        ("loader_speedup_vs_original", 53.0, 55.0),  # higher is better: -11.7% fails, -8.3% passes
        ("step_ratio_vs_raw_b128", 5.6, 5.4),  # lower is better: +12% fails, +8% passes
        ("throughput_fraction_b8192", 0.44, 0.46),
        ("dp2_scaling_b128", 1.70, 1.75),  # 2 GPUs that stop scaling as they did
    ],
)
def test_a_ratio_that_worsens_by_more_than_10_percent_fails_and_one_within_passes(key, worse, within):
    rows, failed = compare.compare(summary(), summary(**{key: worse}), 0.10)
    assert failed and status(rows, key) == "REGRESSION"
    rows, failed = compare.compare(summary(), summary(**{key: within}), 0.10)
    assert not failed and status(rows, key) == "ok"


@pytest.mark.parametrize(
    ("key", "worse", "within"),
    [
        ("step_ratio_vs_raw_b128", 6.6, 6.4),  # lower is better, 30%: +32% fails, +28% passes
        ("dp2_scaling_b128", 1.31, 1.35),  # higher is better, 30%: -31% fails, -29% passes
    ],
)
def test_a_tolerance_the_baseline_names_for_a_ratio_replaces_the_default_for_that_ratio_only(key, worse, within):
    baseline = {**summary(), "tolerances": {key: 0.30}}
    rows, failed = compare.compare(baseline, summary(**{key: within}), 0.10)
    assert not failed and status(rows, key) == "ok"
    rows, failed = compare.compare(baseline, summary(**{key: worse}), 0.10)
    assert failed and status(rows, key) == "REGRESSION"
    rows, failed = compare.compare(baseline, summary(loader_ratio_vs_gather=1.12), 0.10)
    assert failed and status(rows, "loader_ratio_vs_gather") == "REGRESSION"


@pytest.mark.parametrize(
    ("tolerances", "says"),
    [
        ({"step_ratio_b128": 0.3}, "not ratios"),  # a misspelt name would leave the ratio at the default
        ({"dp2_scaling_b128": 1.0}, "can never fail"),  # higher is better: a 100% drop is to zero
    ],
)
def test_a_baseline_tolerance_that_names_no_ratio_or_could_never_fail_is_bad_input(tmp_path, capsys, tolerances, says):
    base, latest = tmp_path / "base.json", tmp_path / "latest.json"
    base.write_text(json.dumps({**summary(), "tolerances": tolerances}))
    latest.write_text(json.dumps(summary()))
    assert compare.main([str(base), str(latest)]) == 2
    assert says in capsys.readouterr().err


def test_an_improvement_of_any_size_passes():
    latest = summary(loader_speedup_vs_original=200.0, step_ratio_vs_raw_b128=1.5, throughput_fraction_b8192=0.9)
    assert compare.compare(summary(), latest, 0.10)[1] is False


def test_a_ratio_missing_on_either_side_is_reported_and_skipped():
    rows, failed = compare.compare(summary(), summary(step_ratio_vs_raw_b8192=3.0), 0.10)
    assert not failed and status(rows, "step_ratio_vs_raw_b8192").startswith("skipped")


def test_the_command_exits_1_on_a_regression_and_prints_the_table(tmp_path, capsys):
    base, latest = tmp_path / "base.json", tmp_path / "latest.json"
    base.write_text(json.dumps(summary()))
    latest.write_text(json.dumps(summary(step_ratio_vs_raw_b128=7.0)))
    assert compare.main([str(base), str(latest)]) == 1
    out = capsys.readouterr().out
    assert "step_ratio_vs_raw_b128" in out and "REGRESSION" in out and "FAIL" in out
    latest.write_text(json.dumps(summary()))
    assert compare.main([str(base), str(latest)]) == 0


@pytest.mark.parametrize(
    ("info", "expected"),
    [
        ({"cuda_device": "NVIDIA H100 80GB HBM3", "cuda_device_count": 1}, "h100"),
        ({"cuda_device": "NVIDIA H200", "cuda_device_count": 2}, "h200x2"),
        ({"cuda_device": None, "affinity_cpus": 2}, "cpu-2core"),
    ],
)
def test_machine_class_names_the_gpu_and_how_many_a_baseline_was_measured_on(info, expected):
    assert summarize.machine_class(info) == expected
