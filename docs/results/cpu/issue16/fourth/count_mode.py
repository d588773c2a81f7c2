"""
Count the CPU bridge's TorchFunctionMode intercepts per training step (steps 10-29 of a 40-step b128 run), by torch
function and by the nearest caller outside torch. Run from the repo root with the package importable:
    python docs/results/cpu/issue16/fourth/count_mode.py
"""

import collections
import sys
from pathlib import Path

import bionemo.example_model  # noqa: F401  (first: before lightning/torchvision)
import lightning.pytorch as pl

from bionemo.example_model.bridges import cpu

STEPS, FIRST, LAST = 40, 10, 30
functions, callers = collections.Counter(), collections.Counter()
counting = [False]
make_mode = cpu.cuda_as_cpu


def counting_mode():
    mode = make_mode()
    base = type(mode).__torch_function__

    class Counting(type(mode)):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            if counting[0]:
                functions[getattr(func, "__qualname__", getattr(func, "__name__", str(func)))] += 1
                frame = sys._getframe(1)
                while frame and "/torch/" in frame.f_code.co_filename:
                    frame = frame.f_back
                callers[f"{Path(frame.f_code.co_filename).name}:{frame.f_code.co_name}" if frame else "?"] += 1
            return base(self, func, types, args, kwargs)

    return Counting()


class Window(pl.Callback):
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        counting[0] = FIRST <= batch_idx < LAST


def main() -> None:
    from bionemo.example_model.config import PretrainConfig
    from bionemo.example_model.train import TrainOptions, train

    cpu.cuda_as_cpu = counting_mode
    opts = TrainOptions(max_steps=STEPS, micro_batch_size=128, accelerator="cpu", devices=1, val_check_interval=STEPS,
                        limit_val_batches=1, log_every_n_steps=STEPS, data_dir=Path.home() / ".cache/bionemo",
                        extra_callbacks=[Window()])
    train(PretrainConfig(), opts, "/tmp/count_mode_run", "count")
    steps = LAST - FIRST
    print("intercepts per step", sum(functions.values()) / steps)
    for name, n in callers.most_common(30):
        print(f"{n / steps:6.1f} {name}")
    print()
    for name, n in functions.most_common(25):
        print(f"{n / steps:6.1f} {name}")


if __name__ == "__main__":  # the checkpoint writer starts `spawn` processes that re-import this file
    main()
