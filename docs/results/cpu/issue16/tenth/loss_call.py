"""
Issue 16, tenth measures: one call of the pretraining loss reduction on this CPU, against the model's forward.

With and without the CPU bridge's TorchFunctionMode. Repo root:
    PYTHONPATH=src .nox/unit/bin/python docs/results/cpu/issue16/tenth/loss_call.py
"""

import statistics
import time

import torch

import bionemo.example_model  # noqa: F401  (before lightning and NeMo, as the CLI imports it)
from bionemo.example_model.bridges import cpu
from bionemo.example_model.config import PretrainConfig
from bionemo.example_model.losses import MSELossReduction
from bionemo.example_model.module import BionemoLightningModule


def timed(name: str, call, calls: int = 2000) -> None:
    """Print the fastest and median of `calls` timed calls, after 100 untimed ones."""
    for _ in range(100):
        call()
    took = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        took.append((time.perf_counter() - start) * 1e6)
    print(f"  {name}: min {min(took):.1f} median {statistics.median(took):.1f} us", flush=True)


def main() -> None:
    """Each timing without the mode, then under it."""
    torch.set_num_threads(1)
    module = BionemoLightningModule(PretrainConfig())
    module.configure_model()
    g = torch.Generator().manual_seed(0)
    batch = {"data": torch.rand(128, 1, 28, 28, generator=g), "label": torch.randint(0, 10, (128,), generator=g),
             "idx": torch.arange(128)}  # fmt: skip
    output = module(batch)

    def loss():
        reduction = MSELossReduction()
        reduction.setup(batch)
        return reduction(output)

    for label, mode in (("no mode", None), ("under cuda_as_cpu", cpu.cuda_as_cpu())):
        print(label)
        if mode is not None:
            mode.__enter__()
        timed("construct a reduction", MSELossReduction)
        timed("construct, set up and call a reduction", loss)
        timed("model forward", lambda: module(batch))
        if mode is not None:
            mode.__exit__(None, None, None)


if __name__ == "__main__":
    main()
