"""
Per call, in one process with the CPU bridges installed: torch's AdamW step on the example autoencoder's parameters
and Lightning's `self.log` (a tensor and a float, as NeMo's and the example's per-step logs are), under the
CUDA-as-CPU mode and outside it (`outside_cuda_as_cpu`), alternating blocks. Run from the repo root:
    python docs/results/cpu/issue16/fifth/outside_mode_bench.py
"""

import timeit

import bionemo.example_model  # noqa: F401  (first: before lightning/torchvision)
import lightning.pytorch as pl
import torch

from bionemo.example_model import bridges
from bionemo.example_model.bridges.cpu import outside_cuda_as_cpu
from bionemo.example_model.model import HIDDEN, IMAGE_PIXELS, LATENT

ROUNDS, N = 3, 2000


class Module(pl.LightningModule):
    def training_step(self, batch, batch_idx):  # noqa: D102
        pass


def main() -> None:
    torch.set_num_threads(1)
    bridges.install("cpu")  # pushes the mode; patches Adam.step and log too, so time their unpatched originals
    step = torch.optim.Adam.step.__wrapped__
    log = pl.LightningModule.log.__wrapped__
    layers = [(IMAGE_PIXELS, HIDDEN), (HIDDEN, LATENT), (LATENT, HIDDEN), (HIDDEN, IMAGE_PIXELS)]  # the autoencoder's
    params = [p for n_in, n_out in layers for p in torch.nn.Linear(n_in, n_out).parameters()]
    for p in params:
        p.grad = torch.randn_like(p)
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    step(optimizer)
    quiet = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer = pl.Trainer(accelerator="cpu", **quiet)
    trainer.training = True
    module = Module()
    module.trainer, module._current_fx_name = trainer, "training_step"
    value = torch.tensor(0.5)

    def logs(log_fn) -> None:
        log_fn(module, "loss", value, prog_bar=True, batch_size=1)
        log_fn(module, "lr", 0.001, prog_bar=True, batch_size=1)

    cases = {
        "AdamW.step, under the mode": lambda: step(optimizer),
        "AdamW.step, outside": lambda: outside_cuda_as_cpu(step)(optimizer),
        "self.log, under the mode": lambda: logs(log),
        "self.log, outside": lambda: logs(outside_cuda_as_cpu(log)),
    }
    for r in range(ROUNDS):
        for name, case in cases.items():
            per_call = timeit.timeit(case, number=N) / N / (2 if "log" in name else 1) * 1e6
            print(f"round {r + 1}: {name}: {per_call:.1f} us a call", flush=True)


if __name__ == "__main__":
    main()
