"""Integration fixtures: the two pipeline runs (one rank, two ranks), each a subprocess on the real MNIST, on CPU.

They are session fixtures because several tests read what one run left behind, and the resume tests reuse their
pretrain checkpoints as the "uninterrupted" reference, which saves a training run per rank count (the integration
suite has a ~12 min budget on a 2-core CI machine). Helpers live in tests/support.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.cli_args import MICRO_BATCH_SIZE, pipeline_args, run_stage_cli
from support.processes import Run, bionemo_mnist, run


@dataclass
class PipelineRun:
    out: Path
    run: Run
    processes: list[dict]  # one record per process (run_stage.py); empty when not recorded

    @property
    def summary(self) -> dict:
        return json.loads((self.out / "summary.json").read_text())


@pytest.fixture(scope="session")
def pipeline_1rank(tmp_path_factory, mnist_root) -> PipelineRun:
    """`bionemo-mnist pipeline` (the installed console script) at one rank, tiny steps."""
    out = tmp_path_factory.mktemp("pipeline-1rank") / "out"
    result = run([*bionemo_mnist(), *pipeline_args(out, mnist_root, devices=1)])
    return PipelineRun(out, result, [])


@pytest.fixture(scope="session")
def pipeline_2rank(tmp_path_factory, mnist_root) -> PipelineRun:
    """
    The same pipeline with `--devices 2` (two processes, gloo), each process recorded by run_stage.py, with a CSV
    row every step: its pretrain stage (2 ranks x 64 = 128 images per step) doubles as the data-parallel run of the
    equivalence tests and as the uninterrupted reference of the two-rank resume test."""
    return _two_rank_pipeline(tmp_path_factory.mktemp("pipeline-2rank"), mnist_root)


@pytest.fixture(scope="session")
def pipeline_2rank_distopt(tmp_path_factory, mnist_root) -> PipelineRun:
    """
    Two ranks with Megatron's distributed optimizer (Adam state sharded over the ranks) and 4 accumulated
    microbatches of 16 per rank: the same 128 images per step as the other pipelines, through the other code paths.
    Its pretrain stage is a batch split of the equivalence tests."""
    base = tmp_path_factory.mktemp("pipeline-2rank-distopt")
    extra = ("--accumulate-grad-batches", "4", "--use-distributed-optimizer")
    return _two_rank_pipeline(base, mnist_root, *extra, micro_batch_size=16)


def _two_rank_pipeline(base: Path, mnist_root: Path, *extra: str, micro_batch_size: int = MICRO_BATCH_SIZE):
    """`pipeline --devices 2` into BASE/out through run_stage.py, recording each process and logging every step."""
    out, pid_dir = base / "out", base / "pids"
    args = [*pipeline_args(out, mnist_root, devices=2, micro_batch_size=micro_batch_size), *extra]
    env = {"BIONEMO_TEST_PID_DIR": str(pid_dir), "BIONEMO_TEST_LOG_EVERY_N_STEPS": "1"}
    result = run([*run_stage_cli(), *args], env=env)
    processes = [json.loads(p.read_text()) for p in sorted(pid_dir.glob("process-*.json"))]
    return PipelineRun(out, result, processes)
