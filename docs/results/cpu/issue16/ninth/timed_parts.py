"""
Issue 16, ninth measures: where a CPU b128 step's time goes, by wall-clock timers around the step's parts.

    PYTHONPATH=src python docs/results/cpu/issue16/ninth/timed_parts.py megatron|raw --batch 128 --steps 1500 \
        --warmup 30 --accelerator cpu --data-dir D --out R.json --run-dir DIR

Runs `benchmarks/step_runner.py` with `time.perf_counter()` wrappers around the functions named in PARTS and prints,
per part, `TIMED name: n=... min p25 median ms` over the calls after the first 30 (the last dropped). The parts nest
(forward-backward holds the forward and backward steps; the optimizer step holds the gradient norm and Adam), so they
do not add up to a step. A diagnostic: each wrapper adds ~1 us a call, and the step time it prints is not a benchmark.
"""

import atexit
import functools
import importlib
import statistics
import sys
import time

PARTS = [  # (module, attribute path, label)
    ("megatron.core.pipeline_parallel.schedules", "forward_backward_no_pipelining", "forward_backward"),
    ("megatron.core.pipeline_parallel.schedules", "forward_step", "  forward_step (fetch, forward, loss)"),
    ("nemo.lightning.megatron_parallel", "default_data_step", "    data_step (fetch the batch)"),
    ("bionemo.example_model.module", "BionemoLightningModule.training_step", "    module training_step"),
    ("bionemo.example_model.model", "ExampleModel.forward", "      model forward"),
    ("megatron.core.pipeline_parallel.schedules", "backward_step", "  backward_step"),
    ("megatron.core.optimizer.optimizer", "ChainedOptimizer.step", "optimizer step"),
    ("megatron.core.optimizer.optimizer", "ChainedOptimizer.get_grad_norm", "  gradient norm"),
    ("torch.optim", "Adam.step", "  torch Adam.step (raw loop too)"),
    ("lightning.pytorch", "LightningModule.log", "LightningModule.log, each call"),
]
TIMES: dict[str, list[float]] = {}


def _wrap(module_name: str, path: str, label: str) -> None:
    owner = importlib.import_module(module_name)
    *parents, name = path.split(".")
    for parent in parents:
        owner = getattr(owner, parent)
    function = getattr(owner, name)

    @functools.wraps(function)
    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            TIMES.setdefault(label, []).append((time.perf_counter() - start) * 1e3)

    setattr(owner, name, timed)


def _report() -> None:
    for _, _, label in PARTS:
        calls = TIMES.get(label, [])[30:-1]
        if len(calls) > 1:
            quartile = statistics.quantiles(calls, n=4)[0]
            print(
                f"TIMED {label}: n={len(calls)} min {min(calls):.3f} p25 {quartile:.3f} "
                f"median {statistics.median(calls):.3f} ms",
                flush=True,
            )


if __name__ == "__main__":  # the final checkpoint save spawns processes that import this file
    sys.path.insert(0, "benchmarks")
    import bionemo.example_model  # noqa: F401  (first, as step_runner does: the package's import hooks)
    import step_runner

    for module_name, path, label in PARTS:
        _wrap(module_name, path, label)
    atexit.register(_report)
    sys.exit(step_runner.main(sys.argv[1:]))
