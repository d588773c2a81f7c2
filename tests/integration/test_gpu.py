"""GPU cells of the main job: pretrain -> finetune -> predict under MegatronStrategy on CUDA, in fp32 and bf16-mixed,
and on two GPUs the data-parallel and resume specifications of test_training_equivalence.py.

Marked `gpu`: `nox -s tests` deselects them; `nox -s gpu` (the matrix cells) and `nox -s tests_gpu` run them on a GPU
node, where a missing GPU is a failure, not a skip. The 2-rank tests are also marked `multirank`: `tests_gpu` leaves
them to the devices=2 cells (selected by `two_ranks` and the precision in their names), where fewer than 2 GPUs fail
them.
"""

import csv
import json
import sys
from pathlib import Path

import pytest
import torch

import bionemo.example_model  # noqa: F401  (installs the torchvision hook before torch-heavy imports)
from support.cli_args import run_stage_cli
from support.processes import run
from support.records import (
    RESUME_ATOL,
    RESUME_RTOL,
    assert_same_training_state,
    checkpoint_state,
    last_checkpoint,
    metric_by_step,
)

pytestmark = pytest.mark.gpu


def _run_pipeline(out: Path, data_dir: Path, precision: str, devices: int) -> dict:
    cmd = [sys.executable, "-m", "bionemo.example_model.cli", "pipeline", "--accelerator", "gpu"]
    cmd += ["--precision", precision, "--devices", str(devices), "--pretrain-steps", "200", "--finetune-steps", "300"]
    cmd += ["--val-check-interval", "100", "--data-dir", str(data_dir), "--out", str(out)]
    result = run(cmd, timeout=600)
    assert result.returncode == 0, result.describe()
    return json.loads((out / "summary.json").read_text())


def test_a_gpu_is_visible():
    assert torch.cuda.is_available(), "the gpu session runs on a node with CUDA; none is visible"


# Index lists a loader asks for: Megatron's sampler's consecutive runs (inside an epoch, across a boundary, into the
# truncated last epoch) and, from the padded evaluation batches, runs followed by padding.
TRAIN_INDICES = [list(range(1000, 1128)), list(range(55000 - 64, 55000 + 64)), list(range(110000, 110000 + 8192))]


def test_the_data_streams_on_the_gpu_hold_the_cpu_streams_items(mnist_root):
    """The data module keeps its splits and each epoch's order on the GPU; a batch there holds the CPU's items."""
    from bionemo.example_model.data import MNISTDataModule, PaddedEvalDataset

    streams = {}
    for device in ("cpu", "cuda"):
        module = MNISTDataModule(data_dir=mnist_root, num_train_samples=2 * 55000 + 8192, device=device)
        module.setup()
        streams[device] = {
            "train": module.mnist_train,
            "val": module.mnist_val,
            "padded val": PaddedEvalDataset(module.mnist_val, 128),
        }
    cases = [("train", indices) for indices in TRAIN_INDICES]
    cases += [("val", list(range(4990, 5000))), ("padded val", list(range(4992, 5120)))]
    for name, indices in cases:
        on_cpu, on_gpu = (streams[device][name].__getitems__(indices) for device in ("cpu", "cuda"))
        assert all(value.device.type == "cuda" for value in on_gpu.values()), name
        assert torch.equal(on_gpu["idx"].cpu(), on_cpu["idx"]), (name, indices[0])
        assert torch.equal(on_gpu["label"].cpu(), on_cpu["label"]), (name, indices[0])
        # CUDA divides by 255 as a product with its reciprocal, so a pixel may differ in its last bit; the 0-255
        # pixel values are the same.
        pixels = [(batch["data"].cpu() * 255).round() for batch in (on_cpu, on_gpu)]
        assert torch.equal(*pixels), (name, indices[0])


@pytest.mark.parametrize("precision", ["32", "bf16-mixed"])
def test_gpu_pipeline_predicts_every_test_image_once_in_order_and_learns(tmp_path, mnist_root, precision):
    summary = _run_pipeline(tmp_path / "out", mnist_root, precision, devices=1)
    assert summary["num_predictions"] == 10000
    with open(summary["predictions"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["idx"]) for r in rows] == list(range(10000))
    # Chance is 0.1; after 200 + 300 steps the classifier is far above it only if it really trained on the GPU.
    assert summary["test_accuracy"] > 0.5, summary


@pytest.mark.multirank
@pytest.mark.parametrize("precision", ["32", "bf16-mixed"])
def test_gpu_pipeline_with_two_ranks(tmp_path, mnist_root, precision):
    # A failure, not a skip: this test is selected only where 2 GPUs are promised (the devices=2 matrix cell).
    assert torch.cuda.device_count() >= 2, f"needs 2 GPUs, {torch.cuda.device_count()} visible"
    summary = _run_pipeline(tmp_path / "out", mnist_root, precision, devices=2)
    assert summary["num_predictions"] == 10000
    assert summary["test_accuracy"] > 0.5, summary


# Two GPUs against one, with the same 128 images a step (fp32). On the GPU the two ways sum in different orders
# (cuBLAS picks other kernels for a 64- and a 128-row matmul, and NCCL sums the two halves' gradients), so per-step
# losses agree only to float rounding carried forward by Adam (on CPU, 2e-7 relative after 20 steps; the GPU run
# passed these bounds on 2 x H200, docs/results/h200x2). rtol 1e-4 on losses and atol 1e-5 on weights stay far below
# one Adam step (lr 1e-3), which a lost, repeated or mis-weighted sample would change.
GPU_LOSS_RTOL, GPU_WEIGHT_ATOL = 1e-4, 1e-5
STEPS, VAL_EVERY = 20, 10


def _two_gpus() -> None:
    assert torch.cuda.device_count() >= 2, f"needs 2 GPUs, {torch.cuda.device_count()} visible"


@pytest.fixture(scope="module")
def gpu_pretrain(tmp_path_factory, mnist_root):
    """`run(devices, micro, steps, out=None, distopt=False)` -> the pretrain dir of a GPU pretrain run, logging every
    step; `distopt` trains with Megatron's distributed optimizer."""

    def pretrain(devices: int, micro: int, steps: int, out: Path | None = None, distopt: bool = False) -> Path:
        out = out or tmp_path_factory.mktemp(f"gpu-d{devices}") / "out"
        args = ["pretrain", "--accelerator", "gpu", "--devices", str(devices), "--steps", str(steps)]
        args += ["--micro-batch-size", str(micro), "--val-check-interval", str(VAL_EVERY)]
        args += ["--use-distributed-optimizer"] if distopt else []
        args += ["--data-dir", str(mnist_root), "--out", str(out)]
        result = run([*run_stage_cli(), *args], env={"BIONEMO_TEST_LOG_EVERY_N_STEPS": "1"})
        assert result.returncode == 0, result.describe()
        return out / "pretrain"

    return pretrain


@pytest.fixture(scope="module")
def two_gpu_runs(gpu_pretrain):
    """`run(distopt)` -> the pretrain dir of the uninterrupted 2-GPU run of STEPS steps, made once per optimizer."""
    made: dict[bool, Path] = {}

    def uninterrupted(distopt: bool) -> Path:
        _two_gpus()
        if distopt not in made:
            made[distopt] = gpu_pretrain(2, 64, STEPS, distopt=distopt)
        return made[distopt]

    return uninterrupted


@pytest.mark.multirank
@pytest.mark.parametrize("precision", ["32"])
def test_two_ranks_train_as_one_gpu_with_the_same_global_batch(gpu_pretrain, two_gpu_runs, precision):
    two, one = two_gpu_runs(distopt=False), gpu_pretrain(1, 128, STEPS)
    for key in ("reduced_train_loss", "val_loss"):
        got = metric_by_step(two / "csv" / "metrics.csv", key)
        want = metric_by_step(one / "csv" / "metrics.csv", key)
        assert sorted(got) == sorted(want) and got, key
        for step in want:
            assert got[step] == pytest.approx(want[step], rel=GPU_LOSS_RTOL), (key, step)
    got, want = checkpoint_state(last_checkpoint(two)), checkpoint_state(last_checkpoint(one))
    for name in (k for k in want if k.startswith("module.")):
        assert (got[name] - want[name]).abs().max().item() <= GPU_WEIGHT_ATOL, name


# A 2-GPU resume with torch's Adam ended bit for bit where the uninterrupted run did in both tries (2 x H200,
# 2 x H100). With Megatron's distributed optimizer, 5 of 6 resumes on 2 x H100 did too (among them a 1000 + 1000-step
# pipeline killed after its first checkpoint), but one 10 -> 20-step resume ended with linear1.weight off while
# Adam's moments were bitwise equal: the rare resume rounding of issue 14, seen on CPU too. So that case is held to
# the CPU suite's resume tolerance (support.records.RESUME_ATOL): 1/100 of one Adam step, which a restarted Adam
# state or a skipped or repeated batch exceeds. (rtol, atol) by optimizer:
RESUME_TOLERANCE = {"adam": (0.0, 0.0), "distributed_adam": (RESUME_RTOL, RESUME_ATOL)}


@pytest.mark.multirank
@pytest.mark.parametrize("optimizer", sorted(RESUME_TOLERANCE))
@pytest.mark.parametrize("precision", ["32"])
def test_two_ranks_resumed_on_gpus_end_where_an_uninterrupted_run_does(
    gpu_pretrain, two_gpu_runs, tmp_path, precision, optimizer
):
    """Weights, Adam moments (and the distributed optimizer's fp32 copies) within RESUME_TOLERANCE; Adam's step
    count exactly."""
    distopt = optimizer == "distributed_adam"
    out = tmp_path / "out"
    gpu_pretrain(2, 64, VAL_EVERY, out, distopt=distopt)
    resumed = last_checkpoint(gpu_pretrain(2, 64, STEPS, out, distopt=distopt))
    rtol, atol = RESUME_TOLERANCE[optimizer]
    assert_same_training_state(resumed, last_checkpoint(two_gpu_runs(distopt)), rtol=rtol, atol=atol)
