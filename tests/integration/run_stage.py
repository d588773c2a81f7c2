"""Entry script for the integration tests' subprocesses (not a test module).

Multi-rank CPU runs use Lightning's subprocess launcher, which starts rank 1.. by re-executing *this process's command
line*; so every multi-rank run must be a script of its own, never a call inside the pytest process.

    python run_stage.py cli ARGS...   # `bionemo-mnist ARGS...`, first recording this process (see below)

`cli` writes one JSON file per process into $BIONEMO_TEST_PID_DIR (when set): pid, parent pid and the rank variables
Lightning gave it. Because the launcher re-executes this script for each extra rank, a run with `--devices 2` leaves
two files with different pids; a rank that ran inside the first process would leave none.

With $BIONEMO_TEST_DIE_IN_SAVE_AT_STEP=N, the process dies (exit code 17, no clean-up: `os._exit`) inside the
first checkpoint save made at global step N, right after the weights are written and before NeMo writes the
checkpoint's context/ and clears its "unfinished" marker: a crash in the middle of a save.

With $BIONEMO_TEST_OLD_STEP set, the stage runs the step as the package did before issue 16: it shows NeMo's
`ProgressPrinter` (every `--log-every-n-steps`) instead of the package's `StepProgress`, and NeMo's call of each
microbatch's loss reduction computes the loss again instead of taking the one `training_step` computed. The process
prints the names of the bridges it installed when it ends: with the speed bridges skipped (`BIONEMO_BRIDGE_SKIP`),
that is the step with its old per-step metric reads and copies.

The equivalence and resume tests compare the loss of every step, and the CLI logs every 50 by default (a CSV row and
a progress line): with $BIONEMO_TEST_LOG_EVERY_N_STEPS set, `--log-every-n-steps` with that value is added to the
command (one env dict serves every fixture's run; logging does not touch the numbers).
"""

import functools
import json
import multiprocessing
import os
import sys
from pathlib import Path


def _record_process() -> None:
    pid_dir = os.environ.get("BIONEMO_TEST_PID_DIR")
    if not pid_dir:
        return
    record = {
        "pid": os.getpid(),
        "ppid": os.getppid(),
        **{k: os.environ.get(k) for k in ("LOCAL_RANK", "RANK", "NODE_RANK", "WORLD_SIZE")},
    }
    Path(pid_dir).mkdir(parents=True, exist_ok=True)
    (Path(pid_dir) / f"process-{os.getpid()}.json").write_text(json.dumps(record))


DIED_IN_SAVE = 17


def _die_in_save_at_step(step: int) -> None:
    import lightning.pytorch as pl

    save = pl.Trainer.save_checkpoint

    @functools.wraps(save)  # keeps the signature: nv_one_logger subclasses Trainer and checks its overrides
    def save_then_die(trainer, *args, **kwargs):
        save(trainer, *args, **kwargs)
        if trainer.global_step == step:
            print(f"run_stage: dying in the checkpoint save at global step {step}", flush=True)
            for child in multiprocessing.active_children():  # Megatron's checkpoint queue manager holds our pipes
                child.kill()
            os._exit(DIED_IN_SAVE)

    pl.Trainer.save_checkpoint = save_then_die


def _use_nemo_progress_printer() -> None:
    from bionemo.example_model import logs

    adopt = logs.adopt_framework_logging

    def adopt_then_patch() -> None:  # the CLI calls it right before importing train (and NeMo)
        adopt()
        from nemo.lightning.pytorch.callbacks.progress_printer import ProgressPrinter

        from bionemo.example_model import train

        train._progress = lambda opts, name: [
            ProgressPrinter(log_interval=opts.log_every_n_steps, skip_accumulate_metrics=["global_step"])
        ]

    logs.adopt_framework_logging = adopt_then_patch


def _compute_each_training_loss_twice() -> None:
    from bionemo.example_model.losses import _SampleMeanLossReduction

    _SampleMeanLossReduction.keep_for_the_next_call = lambda self, forward_out, result: None


def main(argv: list[str]) -> int:
    if not argv or argv[0] != "cli":
        print(__doc__, file=sys.stderr)
        return 64
    _record_process()
    from bionemo.example_model import cli

    if step := os.environ.get("BIONEMO_TEST_DIE_IN_SAVE_AT_STEP"):
        _die_in_save_at_step(int(step))
    old_step = bool(os.environ.get("BIONEMO_TEST_OLD_STEP"))
    if old_step:
        _use_nemo_progress_printer()
        _compute_each_training_loss_twice()
    args = argv[1:]
    if every := os.environ.get("BIONEMO_TEST_LOG_EVERY_N_STEPS"):
        args = [*args, "--log-every-n-steps", every]
    code = cli.main(args)
    if old_step:
        from bionemo.example_model.bridges import installed

        print(f"run_stage: bridges installed: {','.join(installed())}", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
