"""
`bionemo-mnist`: pretrain -> finetune -> predict on MNIST, as separate stages or one `pipeline`.

Only argparse and pathlib are imported at start-up so that `--help` and flag errors answer at once; torch and NeMo
are imported when a stage runs. Mistakes a user can fix end the run with one line, `error: ...`, and exit code 2.
"""

import argparse
import errno
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from bionemo.example_model import logs, runs
from bionemo.example_model.checkpoints import check_is_checkpoint
from bionemo.example_model.errors import ExampleModelError
from bionemo.example_model.options import TrainOptions, command_line_options, flag_name, positive_int

__all__: Sequence[str] = ("build_parser", "main")

DEFAULT_OUT = Path("results") / "mnist"


def _add_common(p: argparse.ArgumentParser, steps_flags: dict[str, int]) -> None:
    """The command's steps flags, every `TrainOptions` field that is a flag (options.py), --out/--restart/--verbose."""
    for flag, default in steps_flags.items():
        p.add_argument(flag, type=positive_int, default=default, help=f"optimizer steps (default {default})")
    for option in command_line_options():
        flag = flag_name(option)
        if isinstance(option.default, bool):
            p.add_argument(flag, action="store_true", help=option.metadata["help"])
        else:
            p.add_argument(
                flag,
                type=option.metadata["parse"],
                choices=option.metadata["choices"],
                default=option.default,
                help=option.metadata["help"] + ("" if option.default is None else f" (default {option.default})"),
            )
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT})")
    p.add_argument(
        "--restart",
        action="store_true",
        help="start the stage(s) over instead of continuing what is in --out (kept as OUT/STAGE.previous-N)",
    )
    p.add_argument(
        "--verbose",
        action="store_true",
        help=f"print NeMo's, Megatron's and Lightning's messages here too (they always go to OUT/{logs.LOG_NAME})",
    )


def build_parser() -> argparse.ArgumentParser:
    """The `bionemo-mnist` argument parser."""
    parser = argparse.ArgumentParser(
        prog="bionemo-mnist",
        description="Train the BioNeMo example MNIST model with NeMo2 / Megatron: pretrain an autoencoder, finetune "
        "a digit classifier on its trunk, predict the 10,000 test images.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{pretrain,finetune,predict,pipeline}")
    p = sub.add_parser("pipeline", help="pretrain -> finetune -> predict; writes OUT/summary.json")
    _add_common(p, {"--pretrain-steps": 2000, "--finetune-steps": 3000})
    p = sub.add_parser("pretrain", help="train the autoencoder (reconstruction loss)")
    _add_common(p, {"--steps": 2000})
    p = sub.add_parser("finetune", help="train the digit classifier on a pretrained trunk")
    _add_common(p, {"--steps": 3000})
    p.add_argument("--pretrain-ckpt", type=Path, required=True, help="checkpoint directory printed by pretrain")
    p = sub.add_parser("predict", help="classify the test images with a finetuned checkpoint")
    _add_common(p, {})
    p.add_argument("--finetune-ckpt", type=Path, required=True, help="checkpoint directory printed by finetune")
    return parser


def _options(args: argparse.Namespace, steps: int) -> TrainOptions:
    given = {option.name: getattr(args, option.name) for option in command_line_options()}
    return TrainOptions(max_steps=steps, **given)


def _check_pretrain_checkpoint(path: Path) -> None:
    """A finetune checkpoint also holds a trunk, so finetune would load it without a word: refuse it."""
    from bionemo.example_model.checkpoints import CheckpointError, checkpoint_tensor_shapes

    if any(name.startswith("digit_classifier.") for name in checkpoint_tensor_shapes(path)):
        raise CheckpointError(
            f"--pretrain-ckpt {path} is a finetune checkpoint (it holds a digit classifier); pass the checkpoint "
            "`bionemo-mnist pretrain` printed"
        )


def _training_stage(
    args: argparse.Namespace, name: str, steps: int, out: Path, input_ckpt: Path | None = None, input_flag: str = ""
) -> runs.Stage:
    """
    A pretrain/finetune stage under OUT/NAME; in `pipeline` its steps flag is --NAME-steps, and a changed input
    checkpoint reruns it instead of being refused."""
    pipeline = args.command == "pipeline"
    return runs.Stage(
        name,
        out / name,
        _options(args, steps).result_settings(),
        steps=steps,
        steps_flag=f"--{name}-steps" if pipeline else "--steps",
        input_checkpoint=input_ckpt,
        input_flag=None if pipeline else input_flag,
    )


def _train_stage(args: argparse.Namespace, stage: runs.Stage, make_config: Callable[[], Any]) -> Path:
    """Train `stage` unless it is finished (see runs.py); returns its final checkpoint."""
    plan = runs.agreed(lambda: stage.plan(args.restart))
    if not plan.train:
        assert plan.checkpoint is not None
        return plan.checkpoint
    logs.adopt_framework_logging()  # before train's imports, whose Megatron imports warn through NeMo's logger
    from bionemo.example_model.checkpoints import check_resumable
    from bionemo.example_model.train import train

    assert stage.steps is not None
    opts = _options(args, stage.steps)
    opts.check()  # before anything of the stage is written
    # before the record changes: a refused run leaves the folder as it was
    check_resumable(stage.stage_dir, opts.use_distributed_optimizer)
    logs.start_log_file()
    stage.begin()
    ckpt = train(make_config(), opts, stage.stage_dir, stage.name)
    stage.finish(ckpt)
    return ckpt


def run_pretrain(args: argparse.Namespace, steps: int, out: Path) -> Path:
    """Stage 1; returns its final checkpoint."""

    def config():
        from bionemo.example_model.config import PretrainConfig

        return PretrainConfig()

    return _train_stage(args, _training_stage(args, "pretrain", steps, out), config)


def run_finetune(args: argparse.Namespace, steps: int, out: Path, pretrain_ckpt: Path) -> Path:
    """Stage 2: the trunk from `pretrain_ckpt`, a fresh digit classifier; returns its final checkpoint."""

    def config():
        from bionemo.example_model.config import ExampleFineTuneConfig

        return ExampleFineTuneConfig(
            initial_ckpt_path=str(pretrain_ckpt), initial_ckpt_skip_keys_with_these_prefixes=["digit_classifier"]
        )

    stage = _training_stage(args, "finetune", steps, out, pretrain_ckpt, "--pretrain-ckpt")
    return _train_stage(args, stage, config)


def run_predict(args: argparse.Namespace, out: Path, finetune_ckpt: Path) -> dict[str, Any]:
    """Stage 3: predictions for all test images, written under OUT/predict; returns the result summary."""
    stage = runs.Stage("predict", out / "predict", {"--precision": args.precision}, input_checkpoint=finetune_ckpt)
    plan = runs.agreed(lambda: stage.plan(args.restart))
    if not plan.train:
        assert plan.result is not None
        return plan.result
    logs.adopt_framework_logging()
    from bionemo.example_model.config import ExampleFineTuneConfig
    from bionemo.example_model.report import plot_confusion_matrix, write_predictions_csv
    from bionemo.example_model.train import predict

    config = ExampleFineTuneConfig(initial_ckpt_path=str(finetune_ckpt))
    logs.start_log_file()
    stage.begin()
    preds = predict(config, _options(args, 1))
    result = {
        "test_accuracy": round(preds.accuracy, 6),
        "num_predictions": len(preds.idx),
        "predictions": str(out / "predict" / "predictions.csv"),
        "confusion_matrix": str(out / "predict" / "confusion_matrix.png"),
    }
    if runs.global_rank() == 0:
        write_predictions_csv(preds, Path(result["predictions"]))
        plot_confusion_matrix(preds, Path(result["confusion_matrix"]))
    stage.finish(result=result)
    return result


def _say(message: str) -> None:
    if runs.global_rank() == 0:
        print(message, flush=True)


def _pipeline(args: argparse.Namespace) -> None:
    out: Path = args.out
    start = time.time()
    pretrain_ckpt = run_pretrain(args, args.pretrain_steps, out)
    _say(f"pretrain checkpoint: {pretrain_ckpt}")
    finetune_ckpt = run_finetune(args, args.finetune_steps, out, pretrain_ckpt)
    _say(f"finetune checkpoint: {finetune_ckpt}")
    result = run_predict(args, out, finetune_ckpt)
    if runs.global_rank() != 0:
        return
    outcome = {**result, "pretrain_checkpoint": str(pretrain_ckpt), "finetune_checkpoint": str(finetune_ckpt)}
    summary = _previous_summary(out / "summary.json", outcome) or _write_summary(args, outcome, start)
    print(json.dumps({k: summary[k] for k in ("test_accuracy", "num_predictions")}), flush=True)
    print(f"summary: {out / 'summary.json'}", flush=True)


def _previous_summary(path: Path, outcome: dict[str, Any]) -> dict[str, Any] | None:
    """The summary.json already written for exactly this outcome (a rerun that had nothing to do), else None."""
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return summary if all(summary.get(k) == v for k, v in outcome.items()) else None


def _write_summary(args: argparse.Namespace, outcome: dict[str, Any], start: float) -> dict[str, Any]:
    from bionemo.example_model.report import plot_loss_curves, write_json

    out: Path = args.out
    metrics = {s: out / s / "csv" / "metrics.csv" for s in ("pretrain", "finetune")}
    plot_loss_curves(metrics, out / "loss_curves.png")
    summary = {
        **outcome,
        "loss_curves": str(out / "loss_curves.png"),
        "logs": {s: str(path) for s, path in metrics.items()},
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "wall_seconds": round(time.time() - start, 1),
    }
    write_json(summary, out / "summary.json")
    return summary


def _command(args: argparse.Namespace) -> Callable[[], None]:
    if args.command == "pipeline":
        return lambda: _pipeline(args)
    if args.command == "pretrain":
        return lambda: _say(f"pretrain checkpoint: {run_pretrain(args, args.steps, args.out)}")
    if args.command == "finetune":
        check_is_checkpoint(args.pretrain_ckpt, what="--pretrain-ckpt")
        _check_pretrain_checkpoint(args.pretrain_ckpt)
        return lambda: _say(f"finetune checkpoint: {run_finetune(args, args.steps, args.out, args.pretrain_ckpt)}")
    check_is_checkpoint(args.finetune_ckpt, what="--finetune-ckpt")
    return lambda: _say(json.dumps(run_predict(args, args.out, args.finetune_ckpt)))


def _disk_full(error: BaseException, out: Path) -> bool:
    """
    Whether `error` came from a full disk: an ENOSPC anywhere in its chain, or next to no space left where --out
    is (torch's checkpoint writer reports a short write only as `unexpected pos N vs M`).
    """
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno == errno.ENOSPC:
            return True
        seen = seen.__cause__ or seen.__context__
    existing = next(p for p in (out, *out.parents) if p.exists())
    return shutil.disk_usage(existing).free < 1 << 20


def _fail(message: str) -> int:
    if runs.global_rank() == 0:
        print(f"bionemo-mnist: error: {message}", file=sys.stderr, flush=True)
    return 2


def _interrupted() -> int:
    _say("bionemo-mnist: interrupted; run the same command again to resume from the last whole checkpoint")
    return 128 + signal.SIGINT


def cpu_info() -> dict[str, str]:
    """The first CPU's fields in Linux's /proc/cpuinfo (`vendor_id`, `model name`, ...); empty where there is none."""
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:  # up to the blank line that ends the first CPU's block (a large node lists hundreds)
                if not line.strip():
                    break
                key, sep, value = line.partition(":")
                if sep:
                    info[key.strip()] = value.strip()
    except OSError:
        return {}
    return info


def reproducible_cpu_math() -> None:
    """
    Ask MKL for the same rounding in every process, as its documentation on Conditional Numerical Reproducibility
    lists the conditions (each only where the user set nothing).

    By default MKL may pick a different kernel, or a different number of threads, for the same product from one
    process to the next: in 3 of 7 tries on a 2-core Xeon, a resumed CPU run rounded one step differently from the
    uninterrupted run and ended up to 2.2e-7 away from its weights. So: `MKL_CBWR=AUTO,STRICT` on Intel CPUs (one
    kernel for this CPU whatever the alignment or thread count), `COMPATIBLE` on others (the one reproducible mode MKL
    offers there; STRICT is Intel-only), and `MKL_DYNAMIC=FALSE`, `OMP_DYNAMIC=FALSE` so that neither library runs a
    product on fewer threads when the machine is busy. MKL and OpenMP read them at their first use, after this;
    Lightning's extra ranks inherit them. (`train.train` then makes MKL's first call on the main thread.)
    """
    intel = cpu_info().get("vendor_id") == "GenuineIntel"
    os.environ.setdefault("MKL_CBWR", "AUTO,STRICT" if intel else "COMPATIBLE")
    os.environ.setdefault("MKL_DYNAMIC", "FALSE")
    os.environ.setdefault("OMP_DYNAMIC", "FALSE")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    reproducible_cpu_math()
    args = build_parser().parse_args(argv)
    runs.stop_all_ranks_on_ctrl_c()
    try:
        runs.check_out_dir(args.out)
        logs.route(args.out, verbose=args.verbose)
        command = _command(args)
        with runs.out_lock(args.out):
            command()
    except KeyboardInterrupt:
        return _interrupted()
    except ExampleModelError as e:
        return _fail(str(e))
    except BaseException as e:  # torch's CheckpointException, what a full disk raises in a save, is no Exception
        if isinstance(e, (SystemExit, GeneratorExit)):
            raise
        if runs.interrupted():  # what a Ctrl-C left half done (a collective with a rank it stopped) failing
            return _interrupted()
        if not _disk_full(e, args.out):
            raise
        first_line = (str(e).splitlines() or [""])[0][:120]
        return _fail(
            f"no space left on the disk of {args.out} ({type(e).__name__}: {first_line}). Free some space, or pass an "
            "--out on another disk, and run the same command again: it resumes from the last whole checkpoint"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
