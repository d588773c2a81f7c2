"""Helpers of the integration tests (imported by conftest.py and the test modules; not a test module).

Every training run is a subprocess: multi-rank runs must be (Lightning's launcher re-executes the command line per
rank), and one-rank runs are too, so that no NeMo / Megatron global state (parallel_state, microbatch calculator,
the CPU bridge's patches) leaks between runs or into other tests.
"""

import csv
import os
import re
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).parent
RUN_STAGE = HERE / "run_stage.py"
RUN_TIMEOUT_S = 480

# The pipeline settings every fixture and reference run shares (a resumed run is compared with these bitwise).
PRETRAIN_STEPS = 20
FINETUNE_STEPS = 20
VAL_CHECK_INTERVAL = 10
MICRO_BATCH_SIZE = 64


def bionemo_mnist() -> list[str]:
    """The installed `bionemo-mnist` console script of this interpreter's environment (else `python -m` the CLI)."""
    script = Path(sys.executable).with_name("bionemo-mnist")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "bionemo.example_model.cli"]


def run_stage_cli() -> list[str]:
    """`bionemo-mnist` through run_stage.py, which records each rank's process (see run_stage.py)."""
    return [sys.executable, str(RUN_STAGE), "cli"]


@dataclass
class Run:
    cmd: list[str]
    pid: int
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    def describe(self) -> str:
        """For assertion messages: the command, exit code and the ends of both streams."""
        return (
            f"$ {' '.join(self.cmd)}\nexit {self.returncode} after {self.seconds:.0f} s\n"
            f"--- stdout (tail) ---\n{self.stdout[-3000:]}\n--- stderr (tail) ---\n{self.stderr[-6000:]}"
        )


def run(cmd: list[str], *, env: dict[str, str] | None = None, timeout: float = RUN_TIMEOUT_S, cwd=None) -> Run:
    """
    Run `cmd` in its own session, capturing output. On timeout the whole session (every rank Lightning started)
    is killed, so a hung collective cannot outlive the test. Extra ranks that are still finishing when rank 0 exits
    are waited for, then killed, since they belong to this run (they share its session id).
    """
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    # Lightning picks a free port itself; a stale value from the environment would make concurrent runs collide.
    for key in ("MASTER_PORT", "MASTER_ADDR", "LOCAL_RANK", "RANK", "WORLD_SIZE", "NODE_RANK"):
        if env is None or key not in env:
            full_env.pop(key, None)
    start = time.monotonic()
    proc = subprocess.Popen(
        cmd, env=full_env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        stderr += f"\n[test harness] killed after {timeout} s"
    seconds = time.monotonic() - start
    _reap_session(proc.pid)
    return Run(cmd, proc.pid, proc.returncode, stdout, stderr, seconds)


def run_together(cmds: list[list[str]], *, env: dict[str, str] | None = None, timeout: float = RUN_TIMEOUT_S):
    """`run` for each of `cmds` at the same time (processes that wait for each other, like torchrun's nodes)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(len(cmds)) as pool:
        return list(pool.map(lambda cmd: run(cmd, env=env, timeout=timeout), cmds))


def session_members(session_id: int) -> list[int]:
    """The live (not zombie) processes of session `session_id`: a run started by `run`/`start` and its ranks."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(") ", 1)[1].split()
        except (OSError, IndexError):
            continue
        # fields: state ppid pgrp session ...
        if int(fields[3]) == session_id and fields[0] != "Z":
            pids.append(int(stat.parent.name))
    return pids


def _reap_session(session_id: int, grace_s: float = 60.0) -> None:
    """Wait for the other processes of session `session_id` (ranks > 0) to exit; kill them after `grace_s`."""
    deadline = time.monotonic() + grace_s
    while session_members(session_id) and time.monotonic() < deadline:
        time.sleep(0.5)
    for pid in session_members(session_id):
        os.kill(pid, signal.SIGKILL)


# argparse's own errors (bad flag values) are prefixed with the subcommand, `bionemo-mnist pretrain: error: ...`,
# after its usage text; the CLI's errors are `bionemo-mnist: error: ...`. Both are one line.
ERROR_LINE = re.compile(r"^bionemo-mnist(?: [a-z]+)?: error: ")


def assert_one_line_error(result: Run, *mentions: str) -> str:
    """`result` failed with exit code 2 and exactly one `error:` line (mentioning each of `mentions`), no traceback."""
    assert result.returncode == 2, result.describe()
    assert "Traceback" not in result.stdout + result.stderr, result.describe()
    errors = [line for line in result.stderr.splitlines() if ERROR_LINE.match(line)]
    assert len(errors) == 1, result.describe()
    for text in mentions:
        assert text in errors[0], errors[0]
    return errors[0]


@dataclass
class Background:
    """A run started by `start`, still going: its process (a session leader) and the files its output goes to."""

    proc: subprocess.Popen
    stdout: Path
    stderr: Path

    def wait_for_output(self, text: str, timeout: float = RUN_TIMEOUT_S) -> None:
        """Block until `text` appears in the run's stdout; fail if the run ends or `timeout` passes first."""
        deadline = time.monotonic() + timeout
        while text not in self.stdout.read_text():
            assert self.proc.poll() is None, f"run ended (exit {self.proc.returncode}) before printing {text!r}"
            assert time.monotonic() < deadline, f"no {text!r} after {timeout} s"
            time.sleep(0.2)

    def finish(self, timeout: float = RUN_TIMEOUT_S) -> Run:
        """Wait for the run to end (killing its whole session after `timeout`) and reap its other ranks."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        _reap_session(self.proc.pid)
        cmd, outputs = list(map(str, self.proc.args)), (self.stdout.read_text(), self.stderr.read_text())
        return Run(cmd, self.proc.pid, self.proc.returncode, *outputs, 0.0)


def start(cmd: list[str], stdout: Path, *, env: dict[str, str] | None = None) -> Background:
    """Start `cmd` like `run` does (own session, clean rank variables) but return at once; output goes to `stdout`
    and `stdout`.err (files: a pipe nobody reads would fill up and stop the run)."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    for key in ("MASTER_PORT", "MASTER_ADDR", "LOCAL_RANK", "RANK", "WORLD_SIZE", "NODE_RANK"):
        full_env.pop(key, None)
    stderr = stdout.with_name(stdout.name + ".err")
    with open(stdout, "w") as out, open(stderr, "w") as err:
        proc = subprocess.Popen(cmd, env=full_env, stdout=out, stderr=err, text=True, start_new_session=True)
    return Background(proc, stdout, stderr)


def read_csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def metric_by_step(metrics_csv: Path, key: str) -> dict[int, float]:
    """{step: value} of one metric from Lightning's CSVLogger file (rows without the metric are skipped)."""
    series: dict[int, float] = {}
    for row in read_csv_rows(metrics_csv):
        if row.get(key):
            series[int(float(row["step"]))] = float(row[key])
    return series


def this_cpu() -> str:
    """`GenuineIntel, Intel(R) Xeon(R) ..., torch AVX512`: for the messages of bit-for-bit assertions, whose rounding
    depends on the CPU (MKL's reproducible mode differs by vendor: cli.reproducible_cpu_math)."""
    import torch

    from bionemo.example_model.cli import cpu_info

    info = cpu_info()
    fields = [info.get(k, "?") for k in ("vendor_id", "model name")]
    return ", ".join([*fields, f"torch {torch.backends.cpu.get_cpu_capability()}", f"{os.cpu_count()} CPUs"])


def printed_progress(output: str) -> list[dict[str, float]]:
    """Each progress line NeMo's printer wrote (`Training epoch 0, iteration 3/7 | lr: 0.001 | ...`), parsed."""
    return [
        {key: float(value) for key, value in re.findall(r"\| (\w+): ([-+.\deE]+)", line)}
        for line in output.splitlines()
        if line.startswith("Training epoch ")
    ]


def printed_global_steps(output: str) -> list[int]:
    """The steps NeMo's progress printer reported (`... | global_step: 7 | reduced_train_loss: ...`), in order."""
    return [int(m) for m in re.findall(r"\| global_step: (\d+) \|", output)]


def checkpoint_state(ckpt: Path) -> dict:
    """
    Every tensor of a NeMo2 checkpoint's `weights/` (Megatron's torch-distributed checkpoint): the model's
    `module.*` weights and, where saved, Adam's `optimizer.state.exp_avg*.module.*`, as plain CPU tensors.

    Read with torch.distributed.checkpoint's FileSystemReader in this one process (no process group needed): the
    files hold each tensor's global shape, so a checkpoint written by 2 ranks reads the same as one by 1 rank.
    """
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict_from_keys

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "torch.distributed is unavailable or uninitialized ... single process"
        state = _load_state_dict_from_keys(storage_reader=FileSystemReader(str(ckpt / "weights")))
    return {k: v for k, v in state.items() if hasattr(v, "shape")}


def checkpoint_common(ckpt: Path) -> dict:
    """The non-tensor part of a checkpoint (global_step, loop state, datamodule state): weights/common.pt."""
    import torch

    return torch.load(ckpt / "weights" / "common.pt", map_location="cpu", weights_only=False)


def checkpoint_model_weights(ckpt: Path) -> dict:
    """A checkpoint's model tensors (no optimizer state) under their plain parameter names (NeMo's `module.` off)."""
    return {k.removeprefix("module."): v for k, v in checkpoint_state(ckpt).items() if k.startswith("module.")}


def adam_steps(ckpt: Path) -> set[float]:
    """
    The step count(s) Adam's state was saved with: Megatron's FP32Optimizer keeps one `common_step`; the distributed
    optimizer writes one `step` per parameter group (its `state_dict`, from the steps of Adam's per-parameter state).
    """
    optimizer = checkpoint_common(ckpt)["optimizer"][0]
    if "param_state_sharding_type" in optimizer:  # the distributed optimizer
        return {group["step"] for group in optimizer["optimizer"]["param_groups"]}
    return {optimizer["state"]["common_step"].item()}


def assert_same_training_state(ckpt: Path, expected_ckpt: Path, *, rtol: float = 0.0, atol: float = 0.0) -> None:
    """
    `ckpt` holds `expected_ckpt`'s weights, Adam moments (and the distributed optimizer's fp32 copies), bit for bit
    unless a tolerance is given (|a - b| <= atol + rtol * |b|, as torch.testing), and exactly its Adam step count.
    A failure names each tensor that is off, with its largest difference.
    """
    import torch

    state, expected = checkpoint_state(ckpt), checkpoint_state(expected_ckpt)
    assert sorted(state) == sorted(expected)
    assert any(k.startswith("optimizer.state.exp_avg") for k in state)  # the -last checkpoint has Adam's state

    def how_far_off(got: torch.Tensor, want: torch.Tensor) -> float | str | None:
        if got.shape != want.shape:
            return f"shape {tuple(got.shape)}, expected {tuple(want.shape)}"
        return None if torch.isclose(got, want, rtol=rtol, atol=atol).all() else (got - want).abs().max().item()

    off = {key: far for key in expected if (far := how_far_off(state[key], expected[key])) is not None}
    assert not off, (this_cpu(), f"max |difference| of each tensor off (rtol {rtol}, atol {atol})", off)
    assert adam_steps(ckpt) == adam_steps(expected_ckpt)


def last_checkpoint(stage_dir: Path) -> Path:
    """
    The newest `-last` checkpoint of a stage: what `train()` returns and NeMo's AutoResume resumes from. (A
    resumed run can leave the `-last` checkpoint it resumed from in place, so there may be older ones.)"""
    found = sorted(
        (p for p in (stage_dir / "checkpoints").glob("*-last") if p.is_dir()), key=lambda p: p.stat().st_mtime
    )
    assert found, f"no -last checkpoint under {stage_dir}"
    return found[-1]


def printed_checkpoint(output: str, stage: str) -> Path:
    """The checkpoint a stage reported on stdout (`pretrain checkpoint: PATH`)."""
    found = re.findall(rf"^{stage} checkpoint: (.+)$", output, flags=re.MULTILINE)
    assert len(found) == 1, output[-3000:]
    return Path(found[0])


def restored_checkpoint(result: Run) -> Path:
    """The checkpoint a run resumed from (Lightning logs the `weights/` folder it restores)."""
    restored = re.search(r"Restoring states from the checkpoint path at (\S+)", result.stdout + result.stderr)
    assert restored, result.describe()
    path = Path(restored.group(1))
    assert path.name == "weights", path
    return path.parent


def pipeline_args(out: Path, data_dir: Path, devices: int, micro_batch_size: int = MICRO_BATCH_SIZE) -> list[str]:
    return [
        "pipeline",
        "--accelerator", "cpu",
        "--devices", str(devices),
        "--pretrain-steps", str(PRETRAIN_STEPS),
        "--finetune-steps", str(FINETUNE_STEPS),
        "--val-check-interval", str(VAL_CHECK_INTERVAL),
        "--micro-batch-size", str(micro_batch_size),
        "--data-dir", str(data_dir),
        "--out", str(out),
    ]  # fmt: skip


def stage_args(command: str, out: Path, data_dir: Path, *extra: str) -> list[str]:
    """A CPU `bionemo-mnist COMMAND` at one rank with the integration suite's micro batch, into `out`."""
    return [
        command,
        "--accelerator", "cpu",
        "--micro-batch-size", str(MICRO_BATCH_SIZE),
        "--data-dir", str(data_dir),
        "--out", str(out),
        *extra,
    ]  # fmt: skip


def file_hashes(root: Path, *, ignore: tuple[str, ...] = ()) -> dict[str, str]:
    """sha256 of every file under `root` by relative path (names in `ignore` left out): to show nothing changed."""
    import hashlib

    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name not in ignore
    }
