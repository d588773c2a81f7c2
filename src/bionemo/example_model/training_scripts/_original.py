"""
What the original example's three scripts share: its trainer (100 steps, validation every 5, bf16-mixed) and its
logger layout, on the GPU where there is one and on the CPU (with this package's bridges) where there is none.
"""

from pathlib import Path

from bionemo.example_model import install_bridges


def trainer(**kwargs):
    """The original scripts' `nl.Trainer`: one device, MegatronStrategy, bf16-mixed, plus `kwargs`."""
    import torch
    from nemo import lightning as nl

    accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    install_bridges(accelerator)
    strategy = nl.MegatronStrategy(
        tensor_model_parallel_size=1,
        pipeline_model_parallel_size=1,
        ddp="megatron",
        find_unused_parameters=True,
        always_save_context=True,
    )
    return nl.Trainer(
        accelerator=accelerator,
        devices=1,
        strategy=strategy,
        num_nodes=1,
        plugins=nl.MegatronMixedPrecision(precision="bf16-mixed"),
        **kwargs,
    )


def training_trainer():
    """The original pretraining/finetuning loop: 100 steps, 5 validation batches every 5 steps."""
    return trainer(limit_val_batches=5, val_check_interval=5, max_steps=100, max_epochs=10, log_every_n_steps=5)


def train(module, save_dir: Path, name: str, checkpoint_callback) -> Path:
    """
    Train `module` on the example's `data_module` with the original's loggers (TensorBoard where it is installed,
    CSV under `save_dir/logs`), resuming from `save_dir`'s last checkpoint; returns that stage's last checkpoint."""
    from lightning.pytorch.loggers import CSVLogger
    from nemo.lightning import AutoResume, NeMoLogger

    from bionemo.example_model.lightning.lightning_basic import data_module
    from bionemo.example_model.train import fit

    trainer_ = training_trainer()  # installs the bridges before anything else touches NeMo
    try:
        import tensorboard as _  # noqa: F401
        from lightning.pytorch.loggers import TensorBoardLogger

        tensorboard = TensorBoardLogger(save_dir=save_dir, name=name)
    except ImportError:
        tensorboard = None
    log = NeMoLogger(
        log_dir=str(save_dir),
        name=name,
        tensorboard=tensorboard,
        ckpt=checkpoint_callback,
        extra_loggers=[CSVLogger(save_dir / "logs", name=name)],
    )
    fit(module, data_module, trainer_, log, AutoResume(resume_if_exists=True, resume_ignore_no_checkpoint=True))
    return Path(checkpoint_callback.last_model_path.replace(".ckpt", ""))
