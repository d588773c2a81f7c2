"""
Where a training step's time goes: profile a window of steps of the Megatron loop (`train.train`, PretrainConfig).

    python benchmarks/profile_step.py --data-dir D --out DIR [--accelerator cpu|gpu] [--batch 128]

Runs `--warmup` steps, then profiles `--steps` steps twice over the same run: first with cProfile (Python: which
framework hooks cost what), then with torch.profiler (operators, CUDA kernels and runtime calls such as
cudaStreamSynchronize / pageable cudaMemcpy, which show where the host waits for the GPU). Writes DIR/cprofile.txt,
DIR/torch_ops.txt and DIR/step_ms.json (the unprofiled, cProfiled and torch-profiled step times, so the profilers'
own overhead is visible). Not a benchmark: numbers under a profiler are inflated; read proportions.
"""

import argparse
import cProfile
import io
import json
import pstats
import statistics
import sys
import time
from pathlib import Path

import bionemo.example_model  # noqa: F401  (first: before lightning/torchvision)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--accelerator", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--steps", type=int, default=100, help="steps in each profiled window")
    args = parser.parse_args(argv)

    import lightning.pytorch as pl
    import torch

    from bionemo.example_model.config import PretrainConfig
    from bionemo.example_model.train import TrainOptions, train

    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    w, n = args.warmup, args.steps
    windows = {"plain": (w, w + n), "cprofile": (w + n, w + 2 * n), "torch_profiler": (w + 2 * n, w + 3 * n)}
    ends: list[float] = []
    cprof = cProfile.Profile()
    activities = [torch.profiler.ProfilerActivity.CPU]
    if args.accelerator == "gpu":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    tprof = torch.profiler.profile(activities=activities)

    class Window(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            ends.append(time.perf_counter())
            step = len(ends)
            if step == windows["cprofile"][0]:
                cprof.enable()
            elif step == windows["cprofile"][1]:
                cprof.disable()
                tprof.start()
            elif step == windows["torch_profiler"][1]:
                tprof.stop()

    opts = TrainOptions(
        max_steps=w + 3 * n + 2,
        micro_batch_size=args.batch,
        accelerator=args.accelerator,
        val_check_interval=w + 3 * n + 2,
        limit_val_batches=1,
        log_every_n_steps=w + 3 * n + 2,
        data_dir=Path(args.data_dir),
        extra_callbacks=[Window()],
    )
    train(PretrainConfig(), opts, args.out / "run", "profile")

    gaps = [(b - a) * 1e3 for a, b in zip(ends, ends[1:])]
    step_ms = {name: statistics.median(gaps[lo : hi - 1]) for name, (lo, hi) in windows.items()}
    (args.out / "step_ms.json").write_text(json.dumps({"batch": args.batch, "median_ms": step_ms}, indent=1))

    text = io.StringIO()
    stats = pstats.Stats(cprof, stream=text)
    text.write(f"cProfile of {n} steps (per-step = cumtime / {n})\n")
    stats.sort_stats("cumulative").print_stats(80)
    stats.sort_stats("tottime").print_stats(40)
    (args.out / "cprofile.txt").write_text(text.getvalue())

    sort = "self_cuda_time_total" if args.accelerator == "gpu" else "self_cpu_time_total"
    averages = tprof.key_averages()
    tables = [
        f"torch.profiler over {n} steps; sorted by self CPU time",
        averages.table(sort_by="self_cpu_time_total", row_limit=60, max_name_column_width=70),
    ]
    if args.accelerator == "gpu":
        tables += [f"sorted by {sort}", averages.table(sort_by=sort, row_limit=30, max_name_column_width=70)]
    (args.out / "torch_ops.txt").write_text("\n".join(tables))
    print(json.dumps(step_ms))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
