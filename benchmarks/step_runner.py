"""
Measure ms per training step in a fresh process (not a test module; `test_step_bench.py` runs it).

    python benchmarks/step_runner.py megatron|raw --batch 128 --steps 40 --warmup 10 [--accelerator cpu|gpu]
        [--devices N] --data-dir D --out result.json --run-dir DIR

megatron: `bionemo.example_model.train.train(PretrainConfig(), TrainOptions(...))` (MegatronStrategy, Megatron
    Adam lr 1e-3 with clip_grad 1.0, the example's data module). A callback records `time.perf_counter()` at every
    `on_train_batch_end`; a step time is the gap between consecutive records, so it includes everything the loop does
    per step (fetching the batch, forward/backward, optimizer, loss reduction, Lightning/NeMo hooks and logging).
    Validation and checkpointing run only after the last step (val_check_interval = max_steps), whose gap is not
    used; the first `warmup` gaps are dropped too. Logging every `max_steps` steps.
raw: the same `ExampleModel` (built from the same config), `torch.optim.Adam(lr=1e-3)`, MSE on one fixed batch,
    a plain Python loop timed the same way (gap between consecutive step ends; no data loading), on the same device.
    On the GPU both loops end every step with a host sync (`loss.item()` in raw; Megatron's gradient clipping and
    loss logging in the other), so a gap is the step's real duration, not its launch time.

For megatron, `first_step_s` is the time from just after the stdlib imports (before torch, Lightning, NeMo) to the
end of the first training step: imports, data preparation, model and strategy set-up, distributed init.

Both run with `--threads` torch threads (default 1: on a busy 2-core machine a 2-thread op waits for its slower
thread, which makes medians swing 10x). Writes {"mode", "batch", "steps", "warmup", "median_ms", "p25_ms",
"mean_ms", "min_ms", "step_ms": [...]} to --out.
"""

import argparse
import faulthandler
import json
import os
import signal
import statistics
import sys
import time
from pathlib import Path

STARTED = time.perf_counter()  # before every non-stdlib import: the start-up figure counts them

import bionemo.example_model  # noqa: E402, F401  (first: before lightning/torchvision)


def _summary(mode: str, args, ends: list[float]) -> dict:
    import torch  # loaded by the run already: read its thread count

    gaps = [(b - a) * 1e3 for a, b in zip(ends, ends[1:])]
    used = gaps[args.warmup :]
    if mode == "megatron":
        used = used[:-1]  # the last step's end may be followed by end-of-fit work; be safe and drop it
    if not used:
        raise SystemExit(f"not enough steps: {len(gaps)} gaps, warmup {args.warmup}")
    return {
        "mode": mode,
        "batch": args.batch,
        "accelerator": args.accelerator,
        "devices": args.devices,
        "steps": args.steps,
        "warmup": args.warmup,
        "torch_threads": torch.get_num_threads(),
        "median_ms": statistics.median(used),
        "p25_ms": statistics.quantiles(used, n=4)[0] if len(used) > 1 else used[0],
        "mean_ms": statistics.fmean(used),
        "min_ms": min(used),
        "first_step_s": ends[0] - STARTED if mode == "megatron" else None,
        "step_ms": used,
    }


def run_megatron(args) -> dict:
    import lightning.pytorch as pl

    from bionemo.example_model.config import PretrainConfig
    from bionemo.example_model.train import TrainOptions, train

    ends: list[float] = []

    class StepClock(pl.Callback):
        def on_train_start(self, trainer, pl_module):  # noqa: D102
            import torch

            torch.set_num_threads(args.threads)  # Lightning's CPU/DDP setup may have changed it

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):  # noqa: D102
            ends.append(time.perf_counter())
            if len(ends) == args.steps:  # where a hang happened, for the harness's message
                _say(f"last step done at {ends[-1] - STARTED:.1f} s; the final validation and checkpoint save follow")

    opts = TrainOptions(
        max_steps=args.steps,
        micro_batch_size=args.batch,
        accelerator=args.accelerator,
        devices=args.devices,
        val_check_interval=args.steps,
        limit_val_batches=1,
        log_every_n_steps=args.steps,
        data_dir=Path(args.data_dir),
        extra_callbacks=[StepClock()],
    )
    train(PretrainConfig(), opts, args.run_dir, "bench")
    _say("train() returned")
    return _summary("megatron", args, ends)


def _say(message: str) -> None:
    print(f"step_runner rank {os.environ.get('LOCAL_RANK', '0')}: {message}", flush=True)


def run_raw(args) -> dict:
    import torch
    import torch.nn.functional as F

    from bionemo.example_model.config import PretrainConfig
    from bionemo.example_model.data import MNISTDataModule
    from bionemo.example_model.model import ExampleModel

    torch.manual_seed(0)
    device = "cuda" if args.accelerator == "gpu" else "cpu"
    dm = MNISTDataModule(data_dir=args.data_dir, batch_size=args.batch, device=device)
    dm.setup()
    batch = next(iter(torch.utils.data.DataLoader(dm.mnist_train, batch_size=args.batch, collate_fn=lambda b: b)))
    x = batch["data"]
    model = ExampleModel(PretrainConfig()).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    ends = [time.perf_counter()]
    for _ in range(args.steps):
        opt.zero_grad(set_to_none=True)
        out = model(x)
        loss = F.mse_loss(out["x_hat"], x.flatten(start_dim=1))
        loss.backward()
        opt.step()
        loss.item()  # a sync point, as a real loop logging its loss would have
        ends.append(time.perf_counter())
    return _summary("raw", args, ends)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["megatron", "raw"])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--accelerator", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--devices", type=int, default=1, help="data-parallel ranks (megatron mode only)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1: steadier on a shared box)")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--run-dir", required=True, help="fresh directory for logs and checkpoints (shared by ranks)")
    args = parser.parse_args(argv)
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # test_step_bench.py asks for stacks before a kill
    import torch

    torch.set_num_threads(args.threads)
    result = run_megatron(args) if args.mode == "megatron" else run_raw(args)
    if not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0:
        Path(args.out).write_text(json.dumps(result, indent=1))
        times = " ".join(f"{k} {result[k + '_ms']:.3f}" for k in ("min", "p25", "median"))
        print(f"{args.mode} b{args.batch}: {times} ms/step over {len(result['step_ms'])} steps")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
