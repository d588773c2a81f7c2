"""
`bionemo-mnist`: pretrain -> finetune -> predict on MNIST, as separate stages or one `pipeline`.

Only argparse and pathlib are imported at start-up so that `--help` and flag errors answer at once; torch and NeMo
are imported when a stage runs. Mistakes a user can fix end the run with one line, `error: ...`, and exit code 2.
"""

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from bionemo.example_model.errors import ExampleModelError

__all__: Sequence[str] = ("build_parser", "main")

DEFAULT_OUT = Path("results") / "mnist"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _add_common(p: argparse.ArgumentParser, steps_flags: dict[str, int]) -> None:
    p.add_argument("--accelerator", choices=["auto", "cpu", "gpu"], default="auto", help="default: gpu if available")
    p.add_argument("--devices", type=_positive_int, default=1, help="data-parallel ranks (processes) per node")
    p.add_argument(
        "--num-nodes",
        type=_positive_int,
        default=1,
        help="machines, each running --devices ranks, started by torchrun or srun (see README)",
    )
    p.add_argument("--precision", choices=["32", "bf16-mixed"], default="32")
    for flag, default in steps_flags.items():
        p.add_argument(flag, type=_positive_int, default=default, help=f"optimizer steps (default {default})")
    p.add_argument("--micro-batch-size", type=_positive_int, default=128, help="samples per rank per microbatch")
    p.add_argument("--accumulate-grad-batches", type=_positive_int, default=1, help="microbatches per optimizer step")
    p.add_argument("--lr", type=_positive_float, default=1e-3, help="Adam learning rate")
    p.add_argument("--val-check-interval", type=_positive_int, default=500, help="steps between validations")
    p.add_argument("--use-distributed-optimizer", action="store_true", help="shard optimizer state over ranks")
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--data-dir", type=Path, default=None, help="MNIST IDX files (default: BIONEMO_CACHE_DIR)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT})")


def build_parser() -> argparse.ArgumentParser:
    """The `bionemo-mnist` argument parser (also used by the original training scripts)."""
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


def _options(args: argparse.Namespace, steps: int):
    from bionemo.example_model.train import TrainOptions

    return TrainOptions(
        max_steps=steps,
        micro_batch_size=args.micro_batch_size,
        accumulate_grad_batches=args.accumulate_grad_batches,
        lr=args.lr,
        accelerator=args.accelerator,
        devices=args.devices,
        num_nodes=args.num_nodes,
        precision=args.precision,
        val_check_interval=args.val_check_interval,
        use_distributed_optimizer=args.use_distributed_optimizer,
        seed=args.seed,
        data_dir=args.data_dir,
        num_workers=args.num_workers,
    )


def _check_checkpoint_arg(path: Path, flag: str) -> None:
    """Fail fast, before the heavy imports, on a checkpoint path that cannot be one."""
    from bionemo.example_model.checkpoints import CheckpointError, is_checkpoint

    if not path.exists():
        raise CheckpointError(
            f"{flag} {path} does not exist; pass the checkpoint directory the previous stage printed"
        )
    if not is_checkpoint(path):
        raise CheckpointError(
            f"{flag} {path} is not a NeMo2 checkpoint (no weights/metadata.json and context/); pass the checkpoint "
            "directory the previous stage printed"
        )


def run_pretrain(args: argparse.Namespace, steps: int, out: Path) -> Path:
    """Stage 1; returns its final checkpoint."""
    from bionemo.example_model.config import PretrainConfig
    from bionemo.example_model.train import train

    return train(PretrainConfig(), _options(args, steps), out / "pretrain", "pretrain")


def run_finetune(args: argparse.Namespace, steps: int, out: Path, pretrain_ckpt: Path) -> Path:
    """Stage 2: the trunk from `pretrain_ckpt`, a fresh digit classifier; returns its final checkpoint."""
    from bionemo.example_model.config import ExampleFineTuneConfig
    from bionemo.example_model.train import train

    config = ExampleFineTuneConfig(
        initial_ckpt_path=str(pretrain_ckpt), initial_ckpt_skip_keys_with_these_prefixes=["digit_classifier"]
    )
    return train(config, _options(args, steps), out / "finetune", "finetune")


def run_predict(args: argparse.Namespace, out: Path, finetune_ckpt: Path) -> dict[str, Any]:
    """Stage 3: predictions for all test images, written under OUT/predict; returns the result summary."""
    from bionemo.example_model.config import ExampleFineTuneConfig
    from bionemo.example_model.report import plot_confusion_matrix, write_predictions_csv
    from bionemo.example_model.train import is_global_rank_zero, predict

    config = ExampleFineTuneConfig(initial_ckpt_path=str(finetune_ckpt))
    preds = predict(config, _options(args, 1))
    result = {
        "test_accuracy": round(preds.accuracy, 6),
        "num_predictions": len(preds.idx),
        "predictions": str(out / "predict" / "predictions.csv"),
        "confusion_matrix": str(out / "predict" / "confusion_matrix.png"),
    }
    if is_global_rank_zero():
        write_predictions_csv(preds, Path(result["predictions"]))
        plot_confusion_matrix(preds, Path(result["confusion_matrix"]))
    return result


def _say(message: str) -> None:
    from bionemo.example_model.train import is_global_rank_zero

    if is_global_rank_zero():
        print(message, flush=True)


def _pipeline(args: argparse.Namespace) -> None:
    from bionemo.example_model.report import plot_loss_curves, write_json
    from bionemo.example_model.train import is_global_rank_zero

    out: Path = args.out
    start = time.time()
    pretrain_ckpt = run_pretrain(args, args.pretrain_steps, out)
    _say(f"pretrain checkpoint: {pretrain_ckpt}")
    finetune_ckpt = run_finetune(args, args.finetune_steps, out, pretrain_ckpt)
    _say(f"finetune checkpoint: {finetune_ckpt}")
    result = run_predict(args, out, finetune_ckpt)
    if not is_global_rank_zero():
        return
    plot_loss_curves({s: out / s / "csv" / "metrics.csv" for s in ("pretrain", "finetune")}, out / "loss_curves.png")
    summary = {
        **result,
        "pretrain_checkpoint": str(pretrain_ckpt),
        "finetune_checkpoint": str(finetune_ckpt),
        "loss_curves": str(out / "loss_curves.png"),
        "logs": {s: str(out / s / "csv" / "metrics.csv") for s in ("pretrain", "finetune")},
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "func"},
        "wall_seconds": round(time.time() - start, 1),
    }
    write_json(summary, out / "summary.json")
    print(json.dumps({k: summary[k] for k in ("test_accuracy", "num_predictions")}), flush=True)
    print(f"summary: {out / 'summary.json'}", flush=True)


def _command(args: argparse.Namespace) -> Callable[[], None]:
    if args.command == "pipeline":
        return lambda: _pipeline(args)
    if args.command == "pretrain":
        return lambda: _say(f"pretrain checkpoint: {run_pretrain(args, args.steps, args.out)}")
    if args.command == "finetune":
        _check_checkpoint_arg(args.pretrain_ckpt, "--pretrain-ckpt")
        return lambda: _say(f"finetune checkpoint: {run_finetune(args, args.steps, args.out, args.pretrain_ckpt)}")
    _check_checkpoint_arg(args.finetune_ckpt, "--finetune-ckpt")
    return lambda: _say(json.dumps(run_predict(args, args.out, args.finetune_ckpt)))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        _command(args)()
    except ExampleModelError as e:
        print(f"bionemo-mnist: error: {e}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
