"""
How a stage runs, in one place: each option's default, its command-line flag and help (cli.py builds its parser from
these fields), and the checks of its value. Importing this module imports no torch: `bionemo-mnist --help` and the
CLI's early error lines stay fast; the checks that need the hardware import it when they run.
"""

import argparse
import math
import os
from dataclasses import Field, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

from bionemo.example_model.errors import ExampleModelError

__all__: Sequence[str] = (
    "Accelerator",
    "Precision",
    "TrainOptions",
    "command_line_options",
    "flag_name",
    "resolve_accelerator",
)

Accelerator = Literal["auto", "cpu", "gpu"]
Precision = Literal["32", "bf16-mixed"]


def _int_at_least(minimum: int, what: str) -> Callable[[str], int]:
    """An argparse type: an integer of `minimum` or more, called `what` in its error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    parse.__doc__ = f"For argparse: {what}."
    return parse


positive_int = _int_at_least(1, "a positive integer")
non_negative_int = _int_at_least(0, "0 or a positive integer")


def positive_float(text: str) -> float:
    """For argparse: a finite number above 0."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a finite positive number, got {text!r}")
    return value


# Megatron's Adam (beta1 0.9) takes a first step of lr / (1 - 0.9) in float32 (max 3.4028e38): a larger lr overflows
# inside torch's Adam with `RuntimeError: value cannot be converted to type float without overflow`.
MAX_LR = 3.4028234663852886e38 * (1 - 0.9)


def learning_rate(text: str) -> float:
    """For argparse: a finite positive learning rate that Adam's first float32 step can hold."""
    value = positive_float(text)
    if value > MAX_LR:
        raise argparse.ArgumentTypeError(
            f"expected at most {MAX_LR:.4g} (Adam's first step, lr / (1 - beta1 0.9), must fit in float32), "
            f"got {text!r}"
        )
    return value


def _flag(
    default: Any,
    help: str,
    parse: Callable[[str], Any] | None = None,
    choices: Sequence[str] = (),
    *,
    shapes_result: bool = False,
) -> Any:
    """
    A field that is also a `bionemo-mnist` flag (`--field-name`): how its text is parsed, and its help.
    `shapes_result`: a stage's trained weights depend on the value, so a rerun asking for another cannot continue it.
    """
    metadata = {"help": help, "parse": parse, "choices": list(choices) or None, "shapes_result": shapes_result}
    return field(default=default, metadata=metadata)


def flag_name(option: Field) -> str:
    """`micro_batch_size` -> `--micro-batch-size`."""
    return "--" + option.name.replace("_", "-")


GLOBAL_BATCH = "global batch (--micro-batch-size x --devices x --num-nodes x --accumulate-grad-batches)"


@dataclass
class TrainOptions:
    """How a stage runs: hardware, batch geometry, steps, optimizer and output. Validated by `check()`."""

    # Parsed and checked like a flag, but the flag is the command's own: --steps, --pretrain-steps or --finetune-steps.
    max_steps: int = field(default=2000, metadata={"parse": positive_int})
    micro_batch_size: int = _flag(128, "samples per rank per microbatch", positive_int)
    accumulate_grad_batches: int = _flag(1, "microbatches per optimizer step", positive_int)
    lr: float = _flag(1e-3, "Adam learning rate", learning_rate, shapes_result=True)
    accelerator: Accelerator = _flag("auto", "auto: the GPU where CUDA is available", choices=("auto", "cpu", "gpu"))
    devices: int = _flag(1, "data-parallel ranks (processes) per node", positive_int)
    num_nodes: int = _flag(
        1, "machines, each running --devices ranks, started by torchrun or srun (see README)", positive_int
    )
    precision: Precision = _flag("32", "numerics of the step", choices=("32", "bf16-mixed"), shapes_result=True)
    val_check_interval: int = _flag(500, "steps between validations (and checkpoints)", positive_int)
    limit_val_batches: int | float = 1.0
    use_distributed_optimizer: bool = _flag(False, "shard optimizer state over ranks", shapes_result=True)
    seed: int = _flag(42, "seed of the model's initial weights and of the data order", int, shapes_result=True)
    data_dir: Path | None = _flag(None, "MNIST IDX files (default: BIONEMO_CACHE_DIR)", Path)
    num_workers: int = _flag(0, "DataLoader worker processes", non_negative_int)
    log_every_n_steps: int = _flag(50, "steps between progress lines and CSV log rows", positive_int)
    extra_callbacks: list = field(default_factory=list)

    @property
    def global_batch_size(self) -> int:
        """Samples per optimizer step over all data-parallel ranks (devices on each of num_nodes machines)."""
        return self.micro_batch_size * self.devices * self.num_nodes * self.accumulate_grad_batches

    @property
    def checkpoint_interval(self) -> int:
        """Steps between validations and checkpoints: `val_check_interval`, but never past the run's last step."""
        return min(self.val_check_interval, self.max_steps)

    def result_settings(self) -> dict[str, Any]:
        """
        What a stage records to refuse a rerun that would not continue it: the global batch's size (how it is split
        over ranks and microbatches may change: a distributed-optimizer checkpoint reshards, and the result differs
        only by float summation order) and each `shapes_result` flag, keyed as the user types it."""
        shaping = {flag_name(f): getattr(self, f.name) for f in fields(self) if f.metadata.get("shapes_result")}
        return {GLOBAL_BATCH: self.global_batch_size, **shaping}

    def check(self) -> None:
        """Reject impossible settings with one clear message each, before anything is started or written."""
        for option in fields(self):  # each value is checked as its flag's text would be (True reads as 'True')
            value, meta = getattr(self, option.name), option.metadata
            if meta.get("choices") and value not in meta["choices"]:
                raise ExampleModelError(f"{option.name} must be one of {', '.join(meta['choices'])}, got {value!r}")
            if meta.get("parse") in (positive_int, non_negative_int, learning_rate):
                try:
                    meta["parse"](str(value))
                except argparse.ArgumentTypeError as e:
                    raise ExampleModelError(f"{option.name}: {e}") from None
        if self.resolved_accelerator() == "gpu":
            import torch

            if self.devices > torch.cuda.device_count():
                raise ExampleModelError(
                    f"--devices {self.devices} asks for more GPUs than the {torch.cuda.device_count()} visible"
                )
        _check_launcher(self.devices, self.num_nodes)

    def resolved_accelerator(self) -> Literal["cpu", "gpu"]:
        """`auto` means the GPU where CUDA is available."""
        return resolve_accelerator(self.accelerator)


def command_line_options() -> list[Field]:
    """The fields of `TrainOptions` that are `bionemo-mnist` flags, in declaration order."""
    return [f for f in fields(TrainOptions) if "help" in f.metadata]


def resolve_accelerator(accelerator: Accelerator) -> Literal["cpu", "gpu"]:
    """`auto` -> gpu if CUDA is available, else cpu; `gpu` without CUDA is an error."""
    import torch

    if accelerator == "gpu" and not torch.cuda.is_available():
        raise ExampleModelError("--accelerator gpu was asked for but CUDA is not available; use --accelerator cpu")
    if accelerator == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    return accelerator


def _check_launcher(devices: int, num_nodes: int) -> None:
    """
    Where torchrun or srun started this process, Lightning's own cluster environment (TorchElasticEnvironment,
    SLURMEnvironment: the ones nl.Trainer will pick) checks --devices/--num-nodes against what was launched; its
    complaint becomes one error line. Several nodes without any launcher would wait for the others forever.
    """
    from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

    environment = next((env() for env in (TorchElasticEnvironment, SLURMEnvironment) if env.detect()), None)
    if environment is not None:
        try:
            environment.validate_settings(num_devices=devices, num_nodes=num_nodes)
        except ValueError as e:
            raise ExampleModelError(f"{e} (processes started by {type(environment).__name__})") from e
    elif num_nodes > 1 and "MASTER_ADDR" not in os.environ:
        raise ExampleModelError(
            f"--num-nodes {num_nodes} needs every node started by a launcher: torchrun --nnodes {num_nodes} or "
            "srun (see README, 'Several nodes'), or MASTER_ADDR/MASTER_PORT/NODE_RANK set on each node"
        )
