"""
Turn pytest-benchmark's JSON into the tracked summary: benchmarks/results/latest.json (+ one line in history.jsonl).

    python benchmarks/summarize.py [--benchmark-json benchmarks/results/benchmark.json] [--results benchmarks/results]

Ratios (the table in ratios.py: direction and target; compare.py checks them, plot.py draws them):
  loader_speedup_vs_original  original ms / ours ms per batch at b128
  loader_ratio_vs_gather      ours ms / raw-gather ms per batch at b128
  step_ratio_vs_raw_b128      megatron ms/step / raw ms/step at b128
  step_ratio_vs_raw_b8192     the same at b8192 (null when not measured)
  throughput_fraction_b8192   raw ms/step / megatron ms/step at b8192: the share of raw throughput kept (null if n/a)
  dp2_scaling_b128            samples/s of the Megatron loop on 2 data-parallel ranks over 1 rank, batch 128 per rank
                              (2 x 1-rank ms / 2-rank ms; 2.0 is perfect; null without 2 ranks)
Loader times are pytest-benchmark medians. Step ratios use each loop's fastest step (`--step-stat min_ms`): the two
loops run one after the other in separate processes, and on a shared 2-core machine background load can inflate one
side's median and not the other's (a CPU run measured the raw b128 median at 2.66 ms with its p25 at 1.56 ms, which
halved the ratio); the fastest of 100-300 steps is what each loop costs when nothing else runs. Every statistic is
still recorded under step_ms.
"""

import argparse
import datetime
import json
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

from ratios import RATIOS

HERE = Path(__file__).parent
PACKAGES = [
    "torch",
    "torchvision",
    "lightning",
    "nemo_toolkit",
    "megatron-core",
    "bionemo-core",
    "bionemo-llm",
    "numpy",
    "pytest-benchmark",
    "bionemo-example_model",
]


def machine_info() -> dict:
    import torch

    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_version": torch.__version__,
        "bench_torch_threads": int(os.environ.get("BENCH_TORCH_THREADS", "1")),
        "cuda_device": cuda,
        "cuda_device_count": torch.cuda.device_count() if cuda else 0,
    }


def machine_class(info: dict) -> str:
    """
    A baseline key: the GPU (e.g. "h100"), with "x<N>" where N > 1 GPUs are visible (the 2-rank step then runs on
    two GPUs, so its ratio is another machine's), else "cpu-<N>core"."""
    if info.get("cuda_device"):
        name = info["cuda_device"].lower()
        gpu = next(
            (t for t in ("h200", "h100", "a100", "l40s", "a10g", "l4", "t4", "v100") if t in name),
            "gpu-" + "".join(c if c.isalnum() else "-" for c in name).strip("-"),
        )
        count = info.get("cuda_device_count") or 1
        return gpu if count == 1 else f"{gpu}x{count}"
    return f"cpu-{info.get('affinity_cpus') or info.get('cpu_count')}core"


def versions() -> dict:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_rev() -> str | None:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE)
        dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True, cwd=HERE).stdout
        return rev.stdout.strip() + ("-dirty" if dirty.strip() else "") if rev.returncode == 0 else None
    except OSError:
        return None


def _ratio(num: float | None, den: float | None) -> float | None:
    return num / den if num is not None and den else None


def summarize(bench: dict, step_stat: str = "min_ms") -> dict:
    loader: dict[str, dict[int, float]] = {}
    ttfb: dict[str, float] = {}
    step_accelerator = None
    startup: dict[str, float | None] = {}
    step: dict[str, dict[int, dict]] = {}
    for b in bench["benchmarks"]:
        info, name = b.get("extra_info", {}), b["name"]
        if name.startswith("test_loader_"):
            loader.setdefault(info["path"], {})[info["batch"]] = b["stats"]["median"] * 1e3
        elif name.startswith("test_time_to_first_batch"):
            ttfb[info["path"]] = b["stats"]["median"] * 1e3
        elif name == "test_cli_help":
            startup["cli_help_s"] = b["stats"]["median"]
        elif name.startswith("test_step"):
            devices = info.get("devices", 1)
            key = info["mode"] if devices == 1 else f"{info['mode']}_dp{devices}"
            step_accelerator = info.get("accelerator", "cpu")
            step.setdefault(key, {})[info["batch"]] = {
                k: info.get(k)
                for k in ("median_ms", "p25_ms", "min_ms", "mean_ms", "steps", "warmup", "torch_threads")
            }
            if key == "megatron" and info["batch"] == 128:
                startup["first_training_step_s"] = info.get("first_step_s")

    def ms(path, batch):
        return loader.get(path, {}).get(batch)

    def step_ms(mode, batch, key=step_stat):
        return step.get(mode, {}).get(batch, {}).get(key)

    meg_b128 = step_ms("megatron", 128)
    ratios = {
        "loader_speedup_vs_original": _ratio(ms("original", 128), ms("ours", 128)),
        "loader_ratio_vs_gather": _ratio(ms("ours", 128), ms("gather", 128)),
        "step_ratio_vs_raw_b128": _ratio(step_ms("megatron", 128), step_ms("raw", 128)),
        "step_ratio_vs_raw_b8192": _ratio(step_ms("megatron", 8192), step_ms("raw", 8192)),
        "throughput_fraction_b8192": _ratio(step_ms("raw", 8192), step_ms("megatron", 8192)),
        "dp2_scaling_b128": _ratio(2 * meg_b128, step_ms("megatron_dp2", 128)) if meg_b128 else None,
    }
    info = machine_info()
    return {
        "timestamp": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "git": git_rev(),
        "machine_class": machine_class(info),
        "machine": info,
        "versions": versions(),
        "ratios": ratios,
        "step_ratio_stat": step_stat,
        "step_accelerator": step_accelerator,
        "targets": {r.name: r.target_text for r in RATIOS if r.target is not None},
        "loader_ms_per_batch": {p: {str(k): v for k, v in sorted(d.items())} for p, d in loader.items()},
        "loader_ms_per_batch_1024_ratios": {
            "speedup_vs_original": _ratio(ms("original", 1024), ms("ours", 1024)),
            "ratio_vs_gather": _ratio(ms("ours", 1024), ms("gather", 1024)),
        },
        "time_to_first_batch_ms_b128": ttfb,
        # seconds: the Megatron b128 run from its first non-stdlib import to its first step's end; `--help` wall time
        "startup_s": startup,
        "step_ms": {m: {str(k): v for k, v in sorted(d.items())} for m, d in step.items()},
        # median-based ratios, for reading beside the tracked ones (informational; not checked by compare.py)
        "step_ratio_vs_raw_by_median": {
            str(b): _ratio(step_ms("megatron", b, "median_ms"), step_ms("raw", b, "median_ms")) for b in (128, 8192)
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--benchmark-json", type=Path, default=HERE / "results" / "benchmark.json")
    parser.add_argument("--results", type=Path, default=HERE / "results")
    parser.add_argument(
        "--step-stat",
        choices=["median_ms", "p25_ms", "min_ms"],
        default="min_ms",
        help="per-step statistic the step ratios use (default min_ms: see the module docstring)",
    )
    parser.add_argument("--no-history", action="store_true", help="do not append to history.jsonl")
    args = parser.parse_args()
    summary = summarize(json.loads(args.benchmark_json.read_text()), args.step_stat)
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "latest.json").write_text(json.dumps(summary, indent=1) + "\n")
    if not args.no_history:
        with open(args.results / "history.jsonl", "a") as f:
            f.write(json.dumps(summary) + "\n")
    print(json.dumps({"machine_class": summary["machine_class"], **summary["ratios"]}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
