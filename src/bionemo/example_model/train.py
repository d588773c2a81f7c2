"""
The one training routine every stage runs, and the predict routine. Stages differ only in their config.

It does what `nemo.collections.llm.train` does (NeMoLogger.setup, AutoResume.setup, trainer.fit) without importing
`nemo.collections.llm`, which drags in transformers, nemo_run and more (see STACK.md, item 7).
"""

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Sequence

import torch

from bionemo.example_model import cpu_bridge, nemo_bridge
from bionemo.example_model.config import ExampleGenericConfig
from bionemo.example_model.data import PAD_IDX, MNISTDataModule
from bionemo.example_model.errors import ExampleModelError

__all__: Sequence[str] = (
    "Predictions",
    "TrainOptions",
    "check_each_item_once",
    "predict",
    "resolve_accelerator",
    "train",
)

logger = logging.getLogger("bionemo.example_model")

Accelerator = Literal["auto", "cpu", "gpu"]
Precision = Literal["32", "bf16-mixed"]


@dataclass
class TrainOptions:
    """How a stage runs: hardware, batch geometry, steps, optimizer and output. Validated by `check()`."""

    max_steps: int = 2000
    micro_batch_size: int = 128
    accumulate_grad_batches: int = 1
    lr: float = 1e-3
    accelerator: Accelerator = "auto"
    devices: int = 1
    precision: Precision = "32"
    val_check_interval: int = 500
    limit_val_batches: int | float = 1.0
    use_distributed_optimizer: bool = False
    seed: int = 42
    data_dir: Path | None = None
    num_workers: int = 0
    log_every_n_steps: int = 50
    extra_callbacks: list = field(default_factory=list)

    @property
    def global_batch_size(self) -> int:
        """Samples per optimizer step over all data-parallel ranks."""
        return self.micro_batch_size * self.devices * self.accumulate_grad_batches

    def check(self) -> None:
        """Reject impossible settings with one clear message each, before anything is started or written."""
        for name in ("max_steps", "micro_batch_size", "accumulate_grad_batches", "devices", "val_check_interval"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ExampleModelError(f"{name} must be a positive integer, got {value!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ExampleModelError(f"lr must be a finite positive number, got {self.lr!r}")
        if self.num_workers < 0:
            raise ExampleModelError(f"num_workers must be 0 or more, got {self.num_workers!r}")
        if self.precision not in ("32", "bf16-mixed"):
            raise ExampleModelError(f"precision must be '32' or 'bf16-mixed', got {self.precision!r}")
        if self.accelerator not in ("auto", "cpu", "gpu"):
            raise ExampleModelError(f"accelerator must be auto, cpu or gpu, got {self.accelerator!r}")
        if self.resolved_accelerator() == "gpu" and self.devices > torch.cuda.device_count():
            raise ExampleModelError(
                f"--devices {self.devices} asks for more GPUs than the {torch.cuda.device_count()} visible"
            )

    def resolved_accelerator(self) -> Literal["cpu", "gpu"]:
        """`auto` means the GPU where CUDA is available."""
        return resolve_accelerator(self.accelerator)


def resolve_accelerator(accelerator: Accelerator) -> Literal["cpu", "gpu"]:
    """`auto` -> gpu if CUDA is available, else cpu; `gpu` without CUDA is an error."""
    if accelerator == "gpu" and not torch.cuda.is_available():
        raise ExampleModelError("--accelerator gpu was asked for but CUDA is not available; use --accelerator cpu")
    if accelerator == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    return accelerator


def _trainer(opts: TrainOptions, callbacks: list, max_steps: int):
    """A NeMo trainer with MegatronStrategy (data parallel only: the model is tiny)."""
    from megatron.core.distributed import DistributedDataParallelConfig
    from nemo import lightning as nl

    accelerator = opts.resolved_accelerator()
    nemo_bridge.install()
    if accelerator == "cpu":
        cpu_bridge.install()
    strategy = nl.MegatronStrategy(
        tensor_model_parallel_size=1,
        pipeline_model_parallel_size=1,
        ddp=DistributedDataParallelConfig(
            use_distributed_optimizer=opts.use_distributed_optimizer,
            overlap_grad_reduce=False,
            overlap_param_gather=False,
        ),
        # torch's Adam (no Apex/TE) can only save a fully reshardable distributed-optimizer state (STACK.md, 9).
        ckpt_optim_fully_reshardable=opts.use_distributed_optimizer,
        ckpt_async_save=False,
        ckpt_load_strictness="log_all",
        progress_interval=opts.log_every_n_steps,
    )
    return nl.Trainer(
        accelerator=accelerator,
        devices=opts.devices,
        strategy=strategy,
        max_steps=max_steps,
        val_check_interval=min(opts.val_check_interval, max_steps),
        limit_val_batches=opts.limit_val_batches,
        num_sanity_val_steps=0,
        log_every_n_steps=opts.log_every_n_steps,
        callbacks=callbacks,
        plugins=nl.MegatronMixedPrecision(precision=opts.precision),
        use_distributed_sampler=False,  # MegatronDataSampler shards the data
        enable_model_summary=False,
    )


def _data(opts: TrainOptions) -> MNISTDataModule:
    device = "cuda" if opts.resolved_accelerator() == "gpu" and opts.num_workers == 0 else "cpu"
    return MNISTDataModule(
        data_dir=opts.data_dir,
        micro_batch_size=opts.micro_batch_size,
        global_batch_size=opts.global_batch_size,
        seed=opts.seed,
        num_workers=opts.num_workers,
        device=device,
    )


def _module(config: ExampleGenericConfig, opts: TrainOptions):
    from bionemo.example_model.module import BionemoLightningModule

    config.bf16 = opts.precision == "bf16-mixed"
    return BionemoLightningModule(config, lr=opts.lr, use_distributed_optimizer=opts.use_distributed_optimizer)


def train(config: ExampleGenericConfig, opts: TrainOptions, run_dir: str | Path, name: str) -> Path:
    """
    Train `config`'s model for `opts.max_steps` steps, logging and checkpointing under `run_dir`.

    Re-running with the same `run_dir` resumes from its last checkpoint (weights, optimizer and data position).
    Returns the final checkpoint directory (weights/ + context/), identical on every rank.
    """
    from nemo import lightning as nl

    from bionemo.example_model.checkpoints import checkpoint_callback
    from bionemo.example_model.run_watch import ContinuousCSVLogger

    opts.check()
    run_dir = Path(run_dir)
    check_resumable(opts, run_dir)
    ckpt = checkpoint_callback(every_n_train_steps=min(opts.val_check_interval, opts.max_steps))
    trainer = _trainer(opts, [*opts.extra_callbacks, *_watchers(opts, name)], opts.max_steps)
    loggers = [ContinuousCSVLogger(save_dir=str(run_dir), name="csv")]
    tensorboard = None
    try:
        import tensorboard as _  # noqa: F401
        from lightning.pytorch.loggers import TensorBoardLogger

        tensorboard = TensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version="")
    except ImportError:
        pass
    nemo_logger = nl.NeMoLogger(
        name=name,
        explicit_log_dir=str(run_dir),
        use_datetime_version=False,
        ckpt=ckpt,
        tensorboard=tensorboard,
        extra_loggers=loggers,
        update_logger_directory=False,
    )
    module = _module(config, opts)
    nemo_logger.setup(trainer, resume_if_exists=True)
    nl.AutoResume(resume_if_exists=True, resume_ignore_no_checkpoint=True).setup(trainer, module)
    trainer.fit(module, _data(opts))
    return _last_checkpoint(run_dir / "checkpoints")


def _watchers(opts: TrainOptions, name: str) -> list:
    """Callbacks that keep the CSV log continuous across resumes and stop a diverging run (run_watch.py)."""
    from bionemo.example_model.run_watch import ContinuousLogs, StopOnDivergence

    return [ContinuousLogs(), StopOnDivergence(name, opts.log_every_n_steps, opts.lr)]


def check_resumable(opts: TrainOptions, run_dir: Path) -> None:
    """
    Refuse, before anything is loaded or written, a resume that upstream cannot do.

    With torch's Adam (no Apex / TransformerEngine, as on every pip install), megatron-core 0.15's
    `DistributedOptimizer.state_dict` (megatron/core/optimizer/distrib_optimizer.py) asserts that Adam holds exactly
    one shared `step`; at resume its state is still empty, so loading any checkpoint fails with a bare
    `AssertionError` (STACK.md, item 9).
    """
    from bionemo.example_model.checkpoints import is_checkpoint

    if opts.use_distributed_optimizer and any(map(is_checkpoint, (run_dir / "checkpoints").glob("*-last"))):
        raise ExampleModelError(
            f"{run_dir} already holds a checkpoint, and resuming it with --use-distributed-optimizer is not supported "
            "with torch's Adam (megatron-core's distributed optimizer cannot load its state). Use a new --out, or "
            "run without --use-distributed-optimizer."
        )


def _last_checkpoint(ckpt_dir: Path) -> Path:
    last = sorted((p for p in ckpt_dir.glob("*-last") if p.is_dir()), key=lambda p: p.stat().st_mtime)
    if not last:
        raise ExampleModelError(f"training finished but wrote no checkpoint under {ckpt_dir}")
    return last[-1]


@dataclass
class Predictions:
    """Every test item once, in dataset order: its index, true label and predicted digit."""

    idx: torch.Tensor
    label: torch.Tensor
    prediction: torch.Tensor

    @property
    def accuracy(self) -> float:  # noqa: D102
        return (self.label == self.prediction).float().mean().item()


def predict(config: ExampleGenericConfig, opts: TrainOptions) -> Predictions:
    """
    Classify the 10,000 test images with `config`'s model (its `initial_ckpt_path` holds the weights).

    Each rank predicts its share; the shares are gathered, padding dropped, and put back in dataset order, so every
    rank returns the same complete, ordered `Predictions`.
    """
    opts.check()
    trainer = _trainer(opts, [*opts.extra_callbacks], max_steps=1)
    module = _module(config, opts)
    data = _data(opts)
    data.data_sampler.output_log = False  # NeMo's sampler would self.log() in predict, which Lightning forbids
    batches = trainer.predict(module, datamodule=data, return_predictions=True)
    local = {key: torch.cat([b[key].detach().cpu() for b in batches]) for key in ("idx", "label", "digit_logits")}
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        shards: list = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(shards, local)
        local = {key: torch.cat([s[key] for s in shards]) for key in local}
    keep = local["idx"] != PAD_IDX
    idx, order = local["idx"][keep].sort()
    preds = Predictions(
        idx=idx, label=local["label"][keep][order], prediction=local["digit_logits"][keep][order].argmax(dim=1)
    )
    check_each_item_once(preds.idx, len(data.splits["test"]))
    return preds


def check_each_item_once(idx: torch.Tensor, num_items: int) -> None:
    """Raise unless the sorted indices `idx` are exactly 0 .. num_items - 1: no item missing, repeated or foreign."""
    if not torch.equal(idx, torch.arange(num_items)):
        raise RuntimeError(
            f"predictions hold {len(idx)} indices, not each of the {num_items} test items exactly once; this is a bug"
        )


def is_global_rank_zero() -> bool:
    """True on the process that writes shared results (rank 0, or the only process)."""
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) == 0
