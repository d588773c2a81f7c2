"""Specification of the original example's documented usage on this package, on CPU: its three scripts run in order
(pretrain; finetune `--pretrain_ckpt_dirpath`; predict `--finetune_dir`), each printing what the original printed, and
the original's predict pattern, `BionemoLightningModule(config=ExampleFineTuneConfig(initial_ckpt_path=DIR))`, scores
a finetuned checkpoint with its trained head (the predictions of the package's own predict, not a random head's).

The scripts read MNIST from `BIONEMO_CACHE_DIR`, as the original's did; here that is the session's MNIST folder.
"""

import sys
from pathlib import Path

import pytest
import torch

from bionemo.example_model.checkpoints import checkpoint_tensor_shapes, is_checkpoint
from support.processes import Run, run
from support.records import read_csv_rows

pytestmark = pytest.mark.slow

SCRIPTS = "bionemo.example_model.training_scripts"


def script(name: str, *args: str, cwd: Path, cache: Path) -> Run:
    env = {"BIONEMO_CACHE_DIR": str(cache)}
    return run([sys.executable, "-m", f"{SCRIPTS}.{name}", *args], env=env, cwd=cwd)


def printed_path(result: Run) -> Path:
    """The last stdout line: the checkpoint path the original scripts print."""
    assert result.returncode == 0, result.describe()
    return Path(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def original_flow(tmp_path_factory, mnist_root) -> dict:
    cwd = tmp_path_factory.mktemp("original-scripts")
    pretrain = printed_path(script("pretrain_mnist", cwd=cwd, cache=mnist_root))
    finetune = printed_path(
        script("finetune_mnist", "--pretrain_ckpt_dirpath", str(pretrain), cwd=cwd, cache=mnist_root)
    )
    predict = script("predict_mnist", "--finetune_dir", str(finetune), cwd=cwd, cache=mnist_root)
    return {"cwd": cwd, "pretrain": pretrain, "finetune": finetune, "predict": predict}


@pytest.mark.parametrize("name", ["finetune_mnist", "predict_mnist"])  # the original pretrain script takes no flags
def test_each_script_with_flags_prints_its_help_and_exits_0(name, tmp_path, mnist_root):
    result = script(name, "--help", cwd=tmp_path, cache=mnist_root)
    assert result.returncode == 0, result.describe()
    assert "usage:" in result.stdout


def test_pretrain_prints_the_path_of_its_checkpoint_under_sample_models(original_flow):
    ckpt = original_flow["cwd"] / original_flow["pretrain"]
    assert is_checkpoint(ckpt), ckpt
    assert original_flow["pretrain"].parts[:2] == ("sample_models", "pretrain")
    assert "digit_classifier.weight" not in checkpoint_tensor_shapes(ckpt)


def test_finetune_prints_the_path_of_a_classifier_checkpoint(original_flow):
    ckpt = original_flow["cwd"] / original_flow["finetune"]
    assert is_checkpoint(ckpt), ckpt
    assert original_flow["finetune"].parts[:2] == ("sample_models", "classifier")
    assert sorted(checkpoint_tensor_shapes(ckpt)) == [
        "digit_classifier.bias",
        "digit_classifier.weight",
        "linear1.bias",
        "linear1.weight",
        "linear2.bias",
        "linear2.weight",
    ]


def test_each_training_script_logs_100_steps_to_csv(original_flow):
    for stage in ("pretrain", "classifier"):
        (metrics,) = (original_flow["cwd"] / "sample_models" / stage / "logs").glob("**/metrics.csv")
        steps = {int(float(row["step"])) for row in read_csv_rows(metrics) if row.get("train_loss_step")}
        assert max(steps) == 99, (stage, sorted(steps)[-5:])


def test_predict_prints_the_list_of_logits_the_original_returns(original_flow):
    result = original_flow["predict"]
    assert result.returncode == 0, result.describe()
    printed = result.stdout[result.stdout.rindex("[tensor([[") :]  # NeMo's own log lines come before it
    assert printed.rstrip().endswith("]])]"), result.stdout[-2000:]
    assert "..." in printed  # torch's summary of a 10000 x 10 tensor


_ORIGINAL_PREDICT = """
import sys
from bionemo.example_model.training_scripts.predict_mnist import run_predict
import torch
(logits,) = run_predict(sys.argv[1], 10_000)
torch.save(logits.float().argmax(dim=1), sys.argv[2])
"""


def test_the_original_predict_pattern_uses_the_trained_head(pipeline_1rank, tmp_path, mnist_root):
    """On the package pipeline's finetuned checkpoint, the original's predict gives the package's predictions."""
    assert pipeline_1rank.run.returncode == 0, pipeline_1rank.run.describe()
    summary = pipeline_1rank.summary
    out = tmp_path / "argmax.pt"
    env = {"BIONEMO_CACHE_DIR": str(mnist_root)}
    result = run([sys.executable, "-c", _ORIGINAL_PREDICT, summary["finetune_checkpoint"], str(out)], env=env)
    assert result.returncode == 0, result.describe()
    original = torch.load(out)
    rows = read_csv_rows(Path(summary["predictions"]))
    ours = torch.tensor([int(row["prediction"]) for row in rows])
    labels = torch.tensor([int(row["label"]) for row in rows])
    assert len(original) == len(ours) == 10000
    # bf16-mixed (the original's precision) against the pipeline's fp32: a few borderline images may flip.
    assert (original == ours).float().mean().item() > 0.99
    accuracy = (original == labels).float().mean().item()
    assert accuracy == pytest.approx(summary["test_accuracy"], abs=0.01), accuracy
