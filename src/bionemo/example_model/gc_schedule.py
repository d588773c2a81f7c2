"""
Python's garbage collector on a schedule of training steps, not of allocation counts (as torchtitan does it).

A NeMo / Megatron / Lightning process holds millions of objects once training starts. Python's automatic collector
walks all of them in a full collection, at whatever step the allocation counts happen to trigger one, and the steps
of this small model are short enough for that to show (issue 16: on an H100 the step is host-bound).
"""

import gc
from typing import Any, Sequence

from lightning.pytorch import Callback, LightningModule, Trainer

__all__: Sequence[str] = ("CollectEveryNSteps",)


class CollectEveryNSteps(Callback):
    """
    When training starts: one full collection, then `gc.freeze()` (what exists by then, the frameworks' modules and
    the model, is never walked again) and the automatic collector off. Every `every_n_steps` optimizer steps, a
    collection of the young generations frees what the steps left in reference cycles. When training ends, as it
    was: the frozen objects thawed, the automatic collector back on if it was.
    """

    def __init__(self, every_n_steps: int) -> None:
        self.every_n_steps = every_n_steps
        self._was_enabled = True

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: D102
        self._was_enabled = gc.isenabled()
        gc.collect()
        gc.freeze()
        gc.disable()

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *_: Any, **__: Any) -> None:  # noqa: D102
        if trainer.global_step % self.every_n_steps == 0:
            gc.collect(1)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: D102
        gc.unfreeze()
        if self._was_enabled:
            gc.enable()

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:  # noqa: D102
        self.on_train_end(trainer, pl_module)
