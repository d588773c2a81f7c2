"""
What a training run keeps an eye on besides training: a CSV log that stays whole across resumes (every step once, at
its own step number) and a loss that stops being a number.
"""

import csv
import math
import os
from typing import Any, Sequence

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only

from bionemo.example_model.errors import ExampleModelError

__all__: Sequence[str] = ("ContinuousCSVLogger", "ContinuousLogs", "DivergedError", "StopOnDivergence")


class _HistoryKeepingWriter(ExperimentWriter):
    """
    Lightning's CSV writer, appending to the metrics.csv earlier runs into the same folder wrote.

    Upstream: lightning/fabric/loggers/csv_logs.py `_ExperimentWriter._check_log_dir_exists` deletes metrics.csv when
    the writer is made, so the log of a resumed run started at the resume point (lightning 2.4).
    """

    def __init__(self, log_dir: str) -> None:
        super().__init__(log_dir)
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as f:
                self.metrics_keys = next(csv.reader(f), [])

    def _check_log_dir_exists(self) -> None:
        """Keep what is there (upstream deletes metrics.csv here)."""

    def drop_from(self, step: int) -> None:
        """Forget the rows of steps >= `step`: a resumed run trains those steps again, and logs them again."""
        if not os.path.isfile(self.metrics_file_path):
            return
        with open(self.metrics_file_path, newline="") as f:
            rows = list(csv.DictReader(f))
        kept = [row for row in rows if int(float(row["step"])) < step]
        if len(kept) == len(rows):
            return
        tmp = f"{self.metrics_file_path}.{os.getpid()}.tmp"
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.metrics_keys)
            writer.writeheader()
            writer.writerows(kept)
        os.replace(tmp, self.metrics_file_path)


class ContinuousCSVLogger(CSVLogger):
    """
    `SAVE_DIR/NAME/metrics.csv` holding every run into the folder, each step once. Rows are written as they are
    logged (every log_every_n_steps steps), not every 100 steps, so a killed run keeps the rows of the steps up to its
    last checkpoint, which its resumed run does not train again.
    """

    def __init__(self, save_dir: str, name: str = "csv") -> None:
        super().__init__(save_dir=save_dir, name=name, version="", flush_logs_every_n_steps=1)

    @property
    @rank_zero_experiment
    def experiment(self) -> _HistoryKeepingWriter:  # noqa: D102
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _HistoryKeepingWriter(log_dir=self.log_dir)
        return self._experiment

    @rank_zero_only
    def drop_from(self, step: int) -> None:  # noqa: D102
        self.experiment.drop_from(step)


class ContinuousLogs(Callback):
    """
    When training starts (fresh or resumed): log each step at its own number, and drop logged rows of the steps
    about to be trained again.

    Upstream: lightning/pytorch/loops/training_epoch_loop.py numbers logged steps by `_batches_that_stepped`, which
    it increments after the `on_train_batch_end` hooks in which checkpoints are saved; a checkpoint so holds one less
    than its global step, and a run resumed from it logged every step one step early (lightning 2.4).
    """

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: D102
        trainer.fit_loop.epoch_loop._batches_that_stepped = trainer.global_step  # one optimizer, one step per batch
        for logger in trainer.loggers:
            if isinstance(logger, ContinuousCSVLogger):
                logger.drop_from(trainer.global_step)


class DivergedError(ExampleModelError):
    """The training loss became inf or NaN."""


class StopOnDivergence(Callback):
    """
    End training at a non-finite training loss, with one line naming the stage, step and value, before a checkpoint
    of the broken weights is saved. The loss is checked every `every_n_steps` steps, where Lightning logs it and the
    progress display shows it (reading it from the device anyway), and at the last step; other steps get no extra
    host sync.
    """

    def __init__(self, stage: str, every_n_steps: int, lr: float) -> None:
        self.stage, self.every_n_steps, self.lr = stage, every_n_steps, lr

    def on_train_batch_end(  # noqa: D102
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step  # optimizer steps done; this batch's loss is logged at step - 1
        if step % self.every_n_steps and step < (trainer.max_steps or 0):
            return
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        value = float(loss)
        if not math.isfinite(value):
            raise DivergedError(
                f"{self.stage} diverged at step {step - 1}: the training loss is {value}. Lower --lr (it is "
                f"{self.lr:g}) and start over, with a new --out or with --restart"
            )
