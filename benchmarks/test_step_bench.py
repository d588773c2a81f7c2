"""
ms per training step: the example's MegatronStrategy loop (`train.train`) vs a raw PyTorch loop (same `ExampleModel`,
MSE, `torch.optim.Adam(lr=1e-3)`, one fixed batch), on the GPU where CUDA is available, else on the CPU
(`BENCH_ACCELERATOR=cpu|gpu` overrides). The Megatron loop is also run with 2 data-parallel ranks at batch 128 (per
rank) where the machine has them (gloo on CPU, 2 GPUs on GPU) to show how it scales.

Each measurement runs `step_runner.py` in its own subprocess (NeMo/Megatron keep global state). What is timed is
inside that process: the gap between consecutive step ends (see step_runner.py). pytest-benchmark cannot time a
subprocess's inner loop, so each test puts the measured numbers (median/p25/min/mean ms per step) in `extra_info`, and
`benchmark.pedantic` times only a lambda returning the recorded median once: the time statistics pytest-benchmark
prints for these tests are NOT the step time (they are ~1 us). Read `extra_info.median_ms`; summarize.py does.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support.processes import session_members

HERE = Path(__file__).parent
# (batch, megatron steps, raw steps, warmup). b8192 on CPU: ~0.1-0.3 s per step, a ~1 min run including startup.
CASES = {128: (100, 300, 20), 8192: (25, 40, 5)}
SKIP_8192 = os.environ.get("BENCH_SKIP_B8192") == "1"
# A step runner that takes longer has hung (CPU: ~80 s for 2 ranks on a busy 2-core machine; GPU: imports 30-40 s
# per process, and Lightning starts rank 1 after rank 0 imported).
RUN_TIMEOUT_S = int(os.environ.get("BENCH_RUN_TIMEOUT_S", "240"))
RANK_EXIT_GRACE_S = 30


def _accelerator() -> str:
    import torch

    return os.environ.get("BENCH_ACCELERATOR") or ("gpu" if torch.cuda.is_available() else "cpu")


def _run(mode: str, batch: int, steps: int, warmup: int, data_dir: Path, tmp_path: Path, devices: int = 1) -> dict:
    out = tmp_path / f"{mode}-{batch}-{devices}.json"
    cmd = [sys.executable, str(HERE / "step_runner.py"), mode, "--batch", str(batch), "--steps", str(steps)]
    cmd += ["--warmup", str(warmup), "--accelerator", _accelerator(), "--devices", str(devices)]
    cmd += ["--data-dir", str(data_dir), "--out", str(out), "--run-dir", str(tmp_path / f"run-{out.stem}")]
    returncode, output, failure = _run_session(cmd, tmp_path / f"{out.stem}.log")
    if failure or returncode != 0:
        reached = "\n".join(line for line in output.splitlines() if line.startswith("step_runner rank"))
        raise AssertionError(
            f"{' '.join(cmd)} {failure or f'failed ({returncode})'}\nhow far each rank got:\n{reached or '(no step)'}"
            f"\n--- output (tail) ---\n{output[-8000:]}"
        )
    return json.loads(out.read_text())


def _run_session(cmd: list[str], log: Path) -> tuple[int | None, str, str]:
    """
    Run `cmd` (and every rank Lightning starts from it) in a session of its own, output to `log`, never hanging:
    after RUN_TIMEOUT_S, or when ranks outlive the first process by RANK_EXIT_GRACE_S (a rank stuck in a collective
    its peer never joins), every process of the session prints its Python stacks (step_runner.py registers
    faulthandler on SIGUSR1) and is killed. Returns (exit code of the first process, output, why it was stopped).
    Output goes to a file, not pipes: a leftover rank holding a pipe would block the reader for good.
    """
    with open(log, "w") as sink:
        proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
        failure = ""
        try:
            proc.wait(timeout=RUN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            failure = f"did not finish in {RUN_TIMEOUT_S} s (BENCH_RUN_TIMEOUT_S); stacks of every rank below"
        deadline = time.monotonic() + RANK_EXIT_GRACE_S
        while not failure and session_members(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        if not failure and session_members(proc.pid):
            failure = f"exited {proc.returncode}, but other ranks were still running {RANK_EXIT_GRACE_S} s later"
        if failure:
            _dump_stacks_and_kill(proc.pid)
        proc.wait()
    return proc.returncode, log.read_text(errors="replace"), failure


def _dump_stacks_and_kill(session: int) -> None:
    """Each process prints its stacks in turn (one at a time, so their dumps do not interleave), then all die."""
    for pid in session_members(session):
        try:
            os.kill(pid, signal.SIGUSR1)
        except ProcessLookupError:
            continue
        time.sleep(1.5)
    try:
        os.killpg(session, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.mark.parametrize("mode", ["raw", "megatron"])
@pytest.mark.parametrize("batch", [128, 8192])
def test_step(benchmark, mnist_root, tmp_path, mode, batch):
    if batch == 8192 and SKIP_8192:
        pytest.skip("BENCH_SKIP_B8192=1")
    meg_steps, raw_steps, warmup = CASES[batch]
    result = _run(mode, batch, meg_steps if mode == "megatron" else raw_steps, warmup, mnist_root, tmp_path)
    _record(benchmark, f"step-b{batch}", result)


def test_step_megatron_two_ranks(benchmark, mnist_root, tmp_path):
    """Batch 128 per rank on 2 data-parallel ranks: twice the samples per step; compare with the 1-rank step."""
    import torch

    if _accelerator() == "gpu" and torch.cuda.device_count() < 2:
        pytest.skip(f"needs 2 GPUs for 2 ranks, {torch.cuda.device_count()} visible (the summary records null)")
    meg_steps, _, warmup = CASES[128]
    _record(benchmark, "step-b128-dp2", _run("megatron", 128, meg_steps, warmup, mnist_root, tmp_path, devices=2))


def _record(benchmark, group: str, result: dict) -> None:
    benchmark.group = group
    benchmark.extra_info.update({k: v for k, v in result.items() if k != "step_ms"})
    benchmark.extra_info["what"] = "median gap between consecutive step ends, measured in a subprocess"
    # Replay: pytest-benchmark's own timing of this lambda is meaningless; the numbers are in extra_info.
    benchmark.pedantic(lambda: result["median_ms"], rounds=1, iterations=1)
    assert result["median_ms"] > 0


def test_cli_help(benchmark):
    """`bionemo-mnist --help` in a fresh interpreter: it must answer without importing torch or NeMo."""
    cmd = [sys.executable, "-m", "bionemo.example_model.cli", "--help"]

    def run():
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60)

    proc = benchmark.pedantic(run, rounds=5, iterations=1, warmup_rounds=1)
    assert proc.returncode == 0 and "pretrain" in proc.stdout, proc.stderr
    benchmark.group = "start-up"
    benchmark.extra_info["what"] = "wall time of a fresh `python -m bionemo.example_model.cli --help`"
