"""
What a training run shows while it trains: Lightning's TQDM bar on a terminal, one plain line per refresh in a log.

NeMo's `ProgressPrinter` (what `MegatronStrategy` puts in place of Lightning's bar) turns every logged metric into a
Python number at every step, a device sync each, and prints `consumed_samples` averaged over its printing window.
`StepProgress` reads the run's state only when it draws, every `refresh_every` optimizer steps and at the last one
(Lightning's progress-bar metrics, a device read each, for the latest training loss); the sample count is the data
sampler's exact integer.
"""

import sys
import time
from datetime import timedelta
from typing import Any, Sequence, TypedDict

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import TQDMProgressBar

__all__: Sequence[str] = ("ProgressStats", "StepProgress", "format_line")

LOSS_METRIC = "reduced_train_loss"  # NeMo's MegatronStrategy logs the step's loss, reduced over ranks, under this name


class ProgressStats(TypedDict):
    """One refresh of the display: the optimizer steps done, of how many, and what they cost."""

    stage: str
    step: int
    max_steps: int
    loss: float | None
    consumed_samples: int | None
    samples_per_s: float | None
    elapsed_s: float
    eta_s: float | None


def _clock(seconds: float | None) -> str:
    return "?" if seconds is None else str(timedelta(seconds=round(seconds)))


def format_line(stats: ProgressStats) -> str:
    """
    One refresh as a line of a log:
    `pretrain step 50/500 | loss 0.02314 | consumed_samples 6400 | 2510 samples/s | elapsed 0:00:03 | eta 0:00:23`.
    """
    fields = [f"{stats['stage']} step {stats['step']}/{stats['max_steps']}"]
    if stats["loss"] is not None:
        fields.append(f"loss {stats['loss']:.4g}")
    if stats["consumed_samples"] is not None:
        fields.append(f"consumed_samples {stats['consumed_samples']}")
    if stats["samples_per_s"] is not None:
        fields.append(f"{stats['samples_per_s']:.0f} samples/s")
    fields += [f"elapsed {_clock(stats['elapsed_s'])}", f"eta {_clock(stats['eta_s'])}"]
    return " | ".join(fields)


class StepProgress(TQDMProgressBar):
    """
    Progress in optimizer steps (Megatron's global batches), from where a resumed run starts to `max_steps`.

    On a terminal: Lightning's TQDM training bar with steps/total, elapsed, ETA, and the latest loss, consumed
    samples and samples/s as its postfix. Elsewhere (CI, SLURM, a pipe): one `format_line` per refresh, on global
    rank 0. Either way the display is refreshed every `refresh_every` steps and at the last step, and nothing is
    read from the device in between.
    """

    def __init__(self, stage: str, refresh_every: int, terminal: bool | None = None) -> None:
        if refresh_every < 1:
            raise ValueError(f"refresh_every must be a positive number of steps, got {refresh_every}")
        super().__init__(refresh_rate=refresh_every)
        self.stage = stage
        self.every = refresh_every  # Lightning may change refresh_rate (TQDM_MINITERS, Colab); the lines keep this
        self.terminal = sys.stdout.isatty() if terminal is None else terminal
        self._start_step = 0
        self._start_time = 0.0

    def init_train_tqdm(self):  # noqa: D102
        bar = super().init_train_tqdm()
        bar.bar_format = "{desc}{percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]"
        return bar

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:  # noqa: D102
        super().setup(trainer, pl_module, stage)
        if not self.terminal:
            self.disable()  # Lightning's validation and predict bars too: a log gets lines, not bar redraws

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: D102
        self._start_step, self._start_time = trainer.global_step, time.monotonic()
        if self.terminal:
            super().on_train_start(trainer, pl_module)

    def on_train_epoch_start(self, trainer: Trainer, *_: Any) -> None:  # noqa: D102
        if self.terminal:
            bar = self.train_progress_bar
            bar.reset(total=trainer.max_steps if trainer.max_steps > 0 else None)
            bar.initial = bar.n = self._start_step
            bar.set_description(self.stage)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *_: Any, **__: Any) -> None:  # noqa: D102
        step = trainer.global_step
        if step % self.every and step != trainer.max_steps:
            return
        if self.terminal and self.is_enabled:
            stats = self.stats(trainer)
            self.train_progress_bar.n = step
            self.train_progress_bar.set_postfix({k: v for k, v in _postfix(stats).items() if v is not None})
        elif not self.terminal and trainer.is_global_zero:
            print(format_line(self.stats(trainer)), flush=True)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Keep the last refresh's postfix (Lightning's would read and show every logged metric)."""

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Close the validation bar; keep the training bar's postfix, as above."""
        self.val_progress_bar.close()
        self.reset_dataloader_idx_tracker()

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: D102
        if self.terminal:
            super().on_train_end(trainer, pl_module)

    def stats(self, trainer: Trainer) -> ProgressStats:
        """The run's state now: the one place the display reads it."""
        step, max_steps = trainer.global_step, trainer.max_steps
        elapsed = time.monotonic() - self._start_time
        done = step - self._start_step
        loss = trainer.callback_metrics.get(LOSS_METRIC)
        sampler = getattr(trainer.datamodule, "data_sampler", None)
        consumed = None if sampler is None else sampler.compute_consumed_samples(step - sampler.init_global_step)
        batch = None if sampler is None else sampler.global_batch_size
        rate = done / elapsed if done and elapsed > 0 else None
        return ProgressStats(
            stage=self.stage,
            step=step,
            max_steps=max_steps,
            loss=None if loss is None else float(loss),
            consumed_samples=consumed,
            samples_per_s=None if rate is None or batch is None else rate * batch,
            elapsed_s=elapsed,
            eta_s=None if rate is None or max_steps < 0 else (max_steps - step) / rate,
        )


def _postfix(stats: ProgressStats) -> dict[str, Any]:
    return {
        "loss": None if stats["loss"] is None else f"{stats['loss']:.4g}",
        "consumed_samples": None if stats["consumed_samples"] is None else str(stats["consumed_samples"]),  # not 1e+5
        "samples/s": None if stats["samples_per_s"] is None else f"{stats['samples_per_s']:.0f}",
    }
