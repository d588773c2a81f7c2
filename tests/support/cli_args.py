"""
The integration suite's shared run settings, and the `bionemo-mnist` command lines built from them. Running those
commands and reading their results is `support.processes` and `support.records`.
"""

import sys
from pathlib import Path

RUN_STAGE = Path(__file__).parents[1] / "integration" / "run_stage.py"


# The pipeline settings every fixture and reference run shares (a resumed run is compared with these bitwise).
PRETRAIN_STEPS = 20
FINETUNE_STEPS = 20
VAL_CHECK_INTERVAL = 10
MICRO_BATCH_SIZE = 64


def run_stage_cli() -> list[str]:
    """`bionemo-mnist` through run_stage.py, which records each rank's process (see run_stage.py)."""
    return [sys.executable, str(RUN_STAGE), "cli"]


def pipeline_args(out: Path, data_dir: Path, devices: int, micro_batch_size: int = MICRO_BATCH_SIZE) -> list[str]:
    return [
        "pipeline",
        "--accelerator", "cpu",
        "--devices", str(devices),
        "--pretrain-steps", str(PRETRAIN_STEPS),
        "--finetune-steps", str(FINETUNE_STEPS),
        "--val-check-interval", str(VAL_CHECK_INTERVAL),
        "--micro-batch-size", str(micro_batch_size),
        "--data-dir", str(data_dir),
        "--out", str(out),
    ]  # fmt: skip


def stage_args(command: str, out: Path, data_dir: Path, *extra: str) -> list[str]:
    """A CPU `bionemo-mnist COMMAND` at one rank with the integration suite's micro batch, into `out`."""
    return [
        command,
        "--accelerator", "cpu",
        "--micro-batch-size", str(MICRO_BATCH_SIZE),
        "--data-dir", str(data_dir),
        "--out", str(out),
        *extra,
    ]  # fmt: skip
