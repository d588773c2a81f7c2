"""
The one training routine every stage runs, and the predict routine. Stages differ only in their config.

`fit` does what `nemo.collections.llm.train` does (NeMoLogger.setup, the telemetry config, AutoResume.setup,
trainer.fit) without importing `nemo.collections.llm`, which drags in transformers, nemo_run and more (STACK.md, 7).
"""

import dataclasses
import logging
from pathlib import Path
from typing import Sequence

import torch

from bionemo.example_model import install_bridges
from bionemo.example_model.checkpoints import check_resumable
from bionemo.example_model.config import ExampleGenericConfig
from bionemo.example_model.data import MNISTDataModule, is_real
from bionemo.example_model.errors import ExampleModelError
from bionemo.example_model.options import TrainOptions, resolve_accelerator
from bionemo.example_model.results import Predictions, check_each_item_once

__all__: Sequence[str] = (
    "TrainOptions",
    "fit",
    "predict",
    "resolve_accelerator",
    "train",
)

logger = logging.getLogger("bionemo.example_model")


def _trainer(opts: TrainOptions, name: str, watchers: Sequence = ()):
    """
    A NeMo trainer with MegatronStrategy (data parallel only: the model is tiny); opts' callbacks, then watchers,
    then the stage `name`'s progress display."""
    from megatron.core.distributed import DistributedDataParallelConfig
    from nemo import lightning as nl

    strategy = nl.MegatronStrategy(
        tensor_model_parallel_size=1,
        pipeline_model_parallel_size=1,
        ddp=DistributedDataParallelConfig(
            use_distributed_optimizer=opts.use_distributed_optimizer,
            overlap_grad_reduce=False,
            overlap_param_gather=False,
        ),
        # torch's Adam (no Apex/TE) can only save a fully reshardable distributed-optimizer state (STACK.md, 9);
        # loading it back needs bridges.all_devices' `distributed_optimizer_*` patches.
        ckpt_optim_fully_reshardable=opts.use_distributed_optimizer,
        ckpt_async_save=False,
        ckpt_load_strictness="log_all",
    )
    return nl.Trainer(
        accelerator=opts.resolved_accelerator(),
        devices=opts.devices,
        num_nodes=opts.num_nodes,
        strategy=strategy,
        max_steps=opts.max_steps,
        val_check_interval=opts.checkpoint_interval,
        limit_val_batches=opts.limit_val_batches,
        num_sanity_val_steps=0,
        log_every_n_steps=opts.log_every_n_steps,
        callbacks=[*opts.extra_callbacks, *watchers, *_progress(opts, name)],
        plugins=nl.MegatronMixedPrecision(precision=opts.precision),
        use_distributed_sampler=False,  # MegatronDataSampler shards the data
        enable_model_summary=False,
    )


def _progress(opts: TrainOptions, name: str) -> list:
    """`StepProgress` every `log_every_n_steps` steps, unless the caller brought a progress bar of its own."""
    from lightning.pytorch.callbacks import ProgressBar

    from bionemo.example_model.progress import StepProgress

    if any(isinstance(callback, ProgressBar) for callback in opts.extra_callbacks):
        return []
    return [StepProgress(name, opts.log_every_n_steps)]


def _data(opts: TrainOptions) -> MNISTDataModule:
    from bionemo.example_model.mnist_files import default_data_dir

    device = "cuda" if opts.resolved_accelerator() == "gpu" and opts.num_workers == 0 else "cpu"
    return MNISTDataModule(
        data_dir=opts.data_dir if opts.data_dir is not None else default_data_dir(),
        batch_size=opts.micro_batch_size,
        global_batch_size=opts.global_batch_size,
        num_workers=opts.num_workers,
        seed=opts.seed,
        num_train_samples=opts.max_steps * opts.global_batch_size,
        device=device,
    )


def _module(config: ExampleGenericConfig, opts: TrainOptions, module_cls: type | None = None):
    from bionemo.example_model.module import BionemoLightningModule

    # The run's precision decides the model's dtype; the caller's config is left as it was given.
    config = dataclasses.replace(config, bf16=opts.precision == "bf16-mixed")
    return (module_cls or BionemoLightningModule)(
        config, lr=opts.lr, use_distributed_optimizer=opts.use_distributed_optimizer
    )


def fit(model, data, trainer, log, resume) -> None:
    """
    What `nemo.collections.llm.train(model, data, trainer, log=log, resume=resume)` does for this example
    (NeMoLogger.setup, the telemetry config, AutoResume.setup, trainer.fit), without importing
    `nemo.collections.llm` (STACK.md, item 7). The telemetry step matters: NeMo's OneLogger callback is enabled on the
    process whose RANK is 0 at import (rank 0 under torchrun), and there the first checkpoint save raises
    `OneLoggerError: Training telemetry config must be set before the start of training` without it.
    """
    from nemo.lightning.callback_group import CallbackGroup

    log.setup(trainer, resume_if_exists=getattr(resume, "resume_if_exists", False))
    CallbackGroup.get_instance().update_config(nemo_version="v2", trainer=trainer, data=data)
    resume.setup(trainer, model)
    trainer.fit(model, data)


def train(config: ExampleGenericConfig, opts: TrainOptions, run_dir: str | Path, name: str) -> Path:
    """
    Train `config`'s model for `opts.max_steps` steps, logging and checkpointing under `run_dir`.

    Re-running with the same `run_dir` resumes from its last checkpoint (weights, optimizer and data position).
    Returns the final checkpoint directory (weights/ + context/), identical on every rank.
    """
    from nemo import lightning as nl

    from bionemo.example_model.checkpoints import final_checkpoint, make_checkpoint_callback
    from bionemo.example_model.run_watch import ContinuousCSVLogger

    opts.check()
    install_bridges(opts.resolved_accelerator())
    _first_mkl_call_on_this_thread()
    run_dir = Path(run_dir)
    check_resumable(run_dir, opts.use_distributed_optimizer)
    ckpt = make_checkpoint_callback(every_n_train_steps=opts.checkpoint_interval)
    trainer = _trainer(opts, name, _watchers(opts, name))
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
    resume = nl.AutoResume(resume_if_exists=True, resume_ignore_no_checkpoint=True)
    fit(_module(config, opts), _data(opts), trainer, nemo_logger, resume)
    return final_checkpoint(run_dir / "checkpoints")


def _first_mkl_call_on_this_thread() -> None:
    """
    One small MKL vector call (a square root, as in Adam) on the main thread, before any OpenMP worker makes one. In
    3 of 14 CPU resume pairs without it, a worker's half of Adam's square root once matched MKL's reduced-accuracy
    AVX2 kernel and the resume was off by ~1e-7; with it, 0 of 46, and 21 of 21 bitwise test comparisons equal with
    it here (issue 14; README). A measured lead, not an explained cause; the call costs microseconds."""
    torch.ones(8).sqrt()


def _watchers(opts: TrainOptions, name: str) -> list:
    """Callbacks that keep the CSV log continuous across resumes and stop a diverging run (run_watch.py)."""
    from bionemo.example_model.run_watch import ContinuousLogs, StopOnDivergence

    return [ContinuousLogs(), StopOnDivergence(name, opts.log_every_n_steps, opts.lr)]


def predict(config: ExampleGenericConfig, opts: TrainOptions) -> Predictions:
    """
    Classify the 10,000 test images with `config`'s model (its `initial_ckpt_path` holds the weights, all of them:
    a config that skips any is refused, since those weights would be untrained).

    Each rank predicts its share; the shares are gathered, padding dropped, and put back in dataset order, so every
    rank returns the same complete, ordered `Predictions`.
    """
    from bionemo.example_model.module import IndexedPredictionModule

    opts.check()
    if not config.initial_ckpt_path or config.initial_ckpt_skip_keys_with_these_prefixes:
        raise ExampleModelError(
            f"predict needs every weight from the checkpoint, but initial_ckpt_path={config.initial_ckpt_path!r} "
            f"and initial_ckpt_skip_keys_with_these_prefixes={config.initial_ckpt_skip_keys_with_these_prefixes!r}: "
            "pass a finetuned checkpoint and skip nothing"
        )
    install_bridges(opts.resolved_accelerator())
    trainer = _trainer(opts, "predict")
    module = _module(config, opts, IndexedPredictionModule)
    data = _data(opts)
    data.data_sampler.output_log = False  # NeMo's sampler would self.log() in predict, which Lightning forbids
    batches = trainer.predict(module, datamodule=data, return_predictions=True)
    local = {key: torch.cat([b[key].detach().cpu() for b in batches]) for key in ("idx", "label", "digit_logits")}
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        shards: list = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(shards, local)
        local = {key: torch.cat([s[key] for s in shards]) for key in local}
    keep = is_real(local["idx"])
    idx, order = local["idx"][keep].sort()
    preds = Predictions(
        idx=idx, label=local["label"][keep][order], prediction=local["digit_logits"][keep][order].argmax(dim=1)
    )
    check_each_item_once(preds.idx, len(data.splits["test"]))
    return preds
