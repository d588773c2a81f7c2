"""
Reading what a run left behind: its CSV log, its printed lines (the package's own, not NeMo's), its checkpoints; and
the one assertion that two checkpoints hold the same training state.
"""

import csv
import os
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from support.processes import Run

# A resumed run is bit-identical to the uninterrupted run (the `bitwise` tests). Before `train()` made its first MKL
# call on the main thread, a resumed CPU process now and then rounded one step differently (one OpenMP thread's
# square root in Adam matched MKL's reduced-accuracy one) and ended up to 1.9e-6 away; on 2 x H100, one
# distributed-optimizer resume in six still does (README, issue 14). The other resume tests check up to that rounding,
# so that a failure says which it is: 1e-5 is 5x the largest such drift seen and 1/100 of one Adam step (lr 1e-3), so
# a resume that restarts Adam's moments or step, or skips or repeats samples, fails those too.
RESUME_RTOL, RESUME_ATOL = 1e-5, 1e-5


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


# A progress line of a run whose stdout is not a terminal (progress.format_line): `pretrain step 8/20 | loss ...`.
PROGRESS_LINE = re.compile(r"^(?P<stage>\w+) step (?P<step>\d+)/(?P<max_steps>\d+)(?P<fields>( \| .*)?)$")


def printed_progress(output: str) -> list[dict]:
    """Each progress line the run printed, parsed: stage, step (optimizer steps done), max_steps, and the fields
    that have a value (`loss`, `consumed_samples`)."""
    lines = []
    for line in output.splitlines():
        m = PROGRESS_LINE.match(line)
        if m is None:
            continue
        parsed: dict = {"stage": m["stage"], "step": int(m["step"]), "max_steps": int(m["max_steps"])}
        for field in m["fields"].split(" | ")[1:]:
            key, _, value = field.partition(" ")
            if key == "loss":
                parsed["loss"] = float(value)
            elif key == "consumed_samples":
                parsed["consumed_samples"] = int(value)
        lines.append(parsed)
    return lines


def printed_steps_trained(output: str) -> list[int]:
    """The step (by its 0-based index, as Lightning's `global_step` during it) each progress line reported, in order:
    `step N/M` reports the N-th step done, index N - 1. With a refresh every step, every step the process trained."""
    return [line["step"] - 1 for line in printed_progress(output)]


def this_cpu() -> str:
    """`GenuineIntel, Intel(R) Xeon(R) ..., torch AVX512`: for the messages of bit-for-bit assertions, whose rounding
    depends on the CPU (MKL's reproducible mode differs by vendor: cli.reproducible_cpu_math)."""
    import torch

    from bionemo.example_model.cli import cpu_info

    info = cpu_info()
    fields = [info.get(k, "?") for k in ("vendor_id", "model name")]
    return ", ".join([*fields, f"torch {torch.backends.cpu.get_cpu_capability()}", f"{os.cpu_count()} CPUs"])


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


def restored_checkpoint(result: "Run") -> Path:
    """
    The checkpoint a run resumed from: the `weights/` folder Lightning says it restores, in the lines of the run's
    process (rank 0) in OUT/bionemo-mnist.log."""
    from bionemo.example_model.logs import LOG_NAME

    out = Path(result.cmd[result.cmd.index("--out") + 1])
    this_run = [line for line in (out / LOG_NAME).read_text().splitlines() if f" pid {result.pid} " in line]
    restoring = re.compile(r"Restoring states from the checkpoint path at (\S+)$")
    said = [m[1] for line in this_run if (m := restoring.search(line))]
    assert len(said) == 1, (said, result.describe())
    path = Path(said[0])
    assert path.name == "weights", path
    return path.parent


def file_hashes(root: Path, *, ignore: tuple[str, ...] = ()) -> dict[str, str]:
    """sha256 of every file under `root` by relative path (names in `ignore` left out): to show nothing changed."""
    import hashlib

    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name not in ignore
    }
