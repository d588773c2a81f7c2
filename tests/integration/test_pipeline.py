"""Specification of `bionemo-mnist pipeline` on CPU: pretrain -> finetune -> predict at tiny step counts (20 + 20
steps of 64 images, validation every 10), at one rank and at two ranks (two processes, gloo), on the real MNIST; and
of the CLI's answer to bad input: one `error:` line, exit code 2, no traceback, nothing destroyed.

The runs themselves are the session fixtures `pipeline_1rank` / `pipeline_2rank` / `pipeline_2rank_distopt`
(conftest.py; the last with Megatron's distributed optimizer and 4 microbatches per step), each a subprocess;
the tests here only read what a run left behind, so every behaviour is one test and a failure names it.
"""

import hashlib
import shutil
import struct
from pathlib import Path

import pytest

from bionemo.example_model.checkpoints import checkpoint_tensor_shapes, is_checkpoint
from bionemo.example_model.mnist_files import raw_dir
from bionemo.example_model.runs import LOCK_NAME
from support.cli_args import FINETUNE_STEPS, MICRO_BATCH_SIZE, PRETRAIN_STEPS
from support.processes import assert_one_line_error, bionemo_mnist, run
from support.records import checkpoint_common, file_hashes, read_csv_rows

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NUM_TEST_IMAGES = 10_000

PIPELINES = [
    pytest.param("pipeline_1rank", id="1rank", marks=pytest.mark.slow),
    pytest.param("pipeline_2rank", id="2rank", marks=[pytest.mark.slow, pytest.mark.multirank]),
    pytest.param("pipeline_2rank_distopt", id="2rank-distopt-4micro", marks=[pytest.mark.slow, pytest.mark.multirank]),
]


@pytest.fixture(params=PIPELINES)
def pipeline(request):
    """A finished pipeline run (conftest.PipelineRun); fails the test, with the run's output, unless it exited 0."""
    result = request.getfixturevalue(request.param)
    assert result.run.returncode == 0, result.run.describe()
    return result


def mnist_test_labels(mnist_root: Path) -> list[int]:
    """The 10,000 test labels straight from the IDX file (big-endian magic 2049, count, then one byte each)."""
    data = (raw_dir(mnist_root) / "t10k-labels-idx1-ubyte").read_bytes()
    magic, count = struct.unpack(">2i", data[:8])
    assert (magic, count) == (2049, NUM_TEST_IMAGES)
    return list(data[8:])


# --------------------------------------------------------------------------------------------------------------------
# The pipeline, at one and at two ranks


def test_pipeline_summary_reports_accuracy_and_all_10000_predictions(pipeline):
    summary = pipeline.summary
    assert isinstance(summary["test_accuracy"], float)
    assert 0.0 <= summary["test_accuracy"] <= 1.0
    assert summary["num_predictions"] == NUM_TEST_IMAGES
    for key in ("predictions", "confusion_matrix", "loss_curves", "pretrain_checkpoint", "finetune_checkpoint"):
        assert Path(summary[key]).exists(), f"summary.json's {key} {summary[key]} does not exist"
    assert f'"num_predictions": {NUM_TEST_IMAGES}' in pipeline.run.stdout


def test_pipeline_checkpoints_are_nemo2_distributed_checkpoints_of_the_right_models(pipeline):
    pretrain, finetune = Path(pipeline.summary["pretrain_checkpoint"]), Path(pipeline.summary["finetune_checkpoint"])
    for ckpt, stage in ((pretrain, "pretrain"), (finetune, "finetune")):
        assert ckpt.is_relative_to(pipeline.out / stage / "checkpoints"), ckpt
        assert ckpt.name.endswith("-last"), ckpt
        assert (ckpt / "weights" / "metadata.json").is_file()
        assert (ckpt / "context").is_dir()
        assert is_checkpoint(ckpt)
        common = checkpoint_common(ckpt)
        assert common["global_step"] == (PRETRAIN_STEPS if stage == "pretrain" else FINETUNE_STEPS)
    # Pretrain saved the autoencoder; finetune the trunk plus the 10-way classifier, without the decoder.
    pretrain_shapes, finetune_shapes = checkpoint_tensor_shapes(pretrain), checkpoint_tensor_shapes(finetune)
    assert {k.split(".")[0] for k in pretrain_shapes} == {"linear1", "linear2", "linear3", "linear4"}
    assert {k.split(".")[0] for k in finetune_shapes} == {"linear1", "linear2", "digit_classifier"}
    assert finetune_shapes["digit_classifier.weight"][0] == 10
    assert all(finetune_shapes[k] == pretrain_shapes[k] for k in finetune_shapes if k.startswith("linear"))


def test_pipeline_predictions_csv_has_every_test_image_once_in_order_with_its_true_label(pipeline, mnist_root):
    rows = read_csv_rows(Path(pipeline.summary["predictions"]))
    assert len(rows) == NUM_TEST_IMAGES
    assert list(rows[0]) == ["idx", "label", "prediction"]
    assert [int(r["idx"]) for r in rows] == list(range(NUM_TEST_IMAGES))  # each once, in dataset order
    assert [int(r["label"]) for r in rows] == mnist_test_labels(mnist_root)
    assert {int(r["prediction"]) for r in rows} <= set(range(10))
    accuracy = sum(r["label"] == r["prediction"] for r in rows) / NUM_TEST_IMAGES
    assert pipeline.summary["test_accuracy"] == pytest.approx(accuracy, abs=1e-6)


def test_pipeline_accuracy_after_20_finetune_steps_is_clearly_above_chance(pipeline):
    # Chance is 0.1 (and a constant prediction scores at most 0.1135). 20 + 20 steps reach ~0.29 on CPU at both rank
    # counts; above 0.2 is only possible if finetuning learnt from the labels.
    assert pipeline.summary["test_accuracy"] > 0.2, pipeline.summary


def test_pipeline_writes_png_plots_and_csv_logs_of_both_stages(pipeline):
    summary = pipeline.summary
    for png in (pipeline.out / "loss_curves.png", pipeline.out / "predict" / "confusion_matrix.png"):
        assert png.read_bytes()[:8] == PNG_SIGNATURE, f"{png} is not a PNG"
    assert Path(summary["loss_curves"]) == pipeline.out / "loss_curves.png"
    assert Path(summary["confusion_matrix"]) == pipeline.out / "predict" / "confusion_matrix.png"
    for stage in ("pretrain", "finetune"):
        metrics = pipeline.out / stage / "csv" / "metrics.csv"
        assert Path(summary["logs"][stage]) == metrics
        val_steps = [int(r["step"]) for r in read_csv_rows(metrics) if r.get("val_loss")]
        # Validation every 10 of 20 steps: after the 10th and the 20th (Lightning counts steps from 0).
        assert val_steps == [9, 19], f"{metrics}: validation rows at steps {val_steps}"


@pytest.mark.slow
@pytest.mark.multirank
def test_pipeline_with_devices_2_runs_each_rank_in_its_own_process(pipeline_2rank):
    """
    How we know there were really two processes: run_stage.py (the command we start) writes one record per process
    it runs in. Lightning's launcher starts rank 1 by re-executing that command line, so rank 1 leaves a second
    record with its own pid, whose parent is the process we started, with LOCAL_RANK=1 and WORLD_SIZE=2 set by the
    launcher. Independently, NeMo's logger writes one file per process, named after that process's global and local
    rank; a second rank in the same process could not produce `globalrank-1`.
    """
    assert pipeline_2rank.run.returncode == 0, pipeline_2rank.run.describe()
    records = {r["pid"]: r for r in pipeline_2rank.processes}
    assert len(records) == 2, records
    main_pid = pipeline_2rank.run.pid
    assert main_pid in records, (main_pid, records)
    (rank1,) = (r for pid, r in records.items() if pid != main_pid)
    assert rank1["ppid"] == main_pid
    assert (rank1["LOCAL_RANK"], rank1["WORLD_SIZE"]) == ("1", "2")
    for stage in ("pretrain", "finetune"):
        # Rank 1's file may sit in a `run_0/` subfolder: when rank 0's NeMo logger finds files in the stage folder
        # that it did not write (rank 1 can be first), it moves them there as "a previous run's" files.
        logs = sorted(p.name for p in (pipeline_2rank.out / stage).glob("**/nemo_log_globalrank-*_localrank-*.txt"))
        assert logs == ["nemo_log_globalrank-0_localrank-0.txt", "nemo_log_globalrank-1_localrank-1.txt"], logs
    assert pipeline_2rank.summary["settings"]["devices"] == 2


# --------------------------------------------------------------------------------------------------------------------
# Bad input: one error line, exit code 2, no traceback


def test_finetune_with_a_pretrain_ckpt_that_does_not_exist_is_one_error_line(tmp_path):
    missing = tmp_path / "no-such-checkpoint"
    result = run([*bionemo_mnist(), "finetune", "--pretrain-ckpt", str(missing), "--out", str(tmp_path / "out")])
    line = assert_one_line_error(result, str(missing), "does not exist")
    assert line.startswith("bionemo-mnist: error: ")
    assert not (tmp_path / "out").exists()


def test_finetune_with_a_directory_that_is_not_a_checkpoint_is_one_error_line(tmp_path):
    not_ckpt = tmp_path / "results"
    (not_ckpt / "weights").mkdir(parents=True)  # looks half like one: no metadata.json, no context/
    result = run([*bionemo_mnist(), "finetune", "--pretrain-ckpt", str(not_ckpt), "--out", str(tmp_path / "out")])
    line = assert_one_line_error(result, str(not_ckpt), "not a NeMo2 checkpoint")
    assert line.startswith("bionemo-mnist: error: ")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("command", "flag", "value"),
    [
        ("pretrain", "--steps", "0"),
        ("pretrain", "--steps", "-3"),
        ("pretrain", "--devices", "0"),
        ("pretrain", "--micro-batch-size", "-1"),
        ("pretrain", "--steps", "ten"),
        ("pipeline", "--pretrain-steps", "-5"),
        ("pipeline", "--finetune-steps", "0"),
        ("pipeline", "--accumulate-grad-batches", "0"),
    ],
)
def test_a_count_that_is_not_a_positive_integer_is_one_error_line(tmp_path, command, flag, value):
    result = run([*bionemo_mnist(), command, f"{flag}={value}", "--out", str(tmp_path / "out")])
    assert_one_line_error(result, f"argument {flag}", "positive integer", repr(value))
    assert not (tmp_path / "out").exists()


def test_pretrain_on_a_corrupt_idx_file_is_one_error_line_and_leaves_the_file_as_it_was(tmp_path, mnist_root):
    data_dir = tmp_path / "data"
    shutil.copytree(raw_dir(mnist_root), raw_dir(data_dir))
    corrupt = raw_dir(data_dir) / "t10k-labels-idx1-ubyte"
    content = bytearray(corrupt.read_bytes())
    content[100] ^= 0xFF  # one label byte: the header still parses, only the md5 can tell
    corrupt.write_bytes(bytes(content))
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in raw_dir(data_dir).iterdir()}

    result = run(
        [*bionemo_mnist(), "pretrain", "--accelerator", "cpu", "--steps", "1"]
        + ["--data-dir", str(data_dir), "--out", str(tmp_path / "out")]
    )

    line = assert_one_line_error(result, str(corrupt), "md5")
    assert line.startswith("bionemo-mnist: error: ")
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in raw_dir(data_dir).iterdir()}
    assert after == before  # not repaired, replaced or deleted, and no temp files left next to it
    assert not list((tmp_path / "out").glob("**/checkpoints/*"))


OPTIMIZER_SWITCHES = [
    pytest.param(
        "pipeline_2rank_distopt",
        ["--devices", "2", "--micro-batch-size", "16", "--accumulate-grad-batches", "4"],
        id="distopt-to-plain",
        marks=[pytest.mark.slow, pytest.mark.multirank],
    ),
    pytest.param(
        "pipeline_1rank",
        ["--micro-batch-size", str(MICRO_BATCH_SIZE), "--use-distributed-optimizer"],
        id="plain-to-distopt",
        marks=pytest.mark.slow,
    ),
]


@pytest.mark.parametrize(("saved_by", "flags"), OPTIMIZER_SWITCHES)
def test_resuming_with_the_other_kind_of_optimizer_is_one_error_line_and_leaves_the_run_as_it_was(
    request, tmp_path, mnist_root, saved_by, flags
):
    """Megatron's distributed and plain optimizers cannot load each other's state: refused up front, no traceback."""
    pipeline = request.getfixturevalue(saved_by)
    assert pipeline.run.returncode == 0, pipeline.run.describe()
    out = tmp_path / "out"
    shutil.copytree(pipeline.out / "pretrain", out / "pretrain")
    before = file_hashes(out)

    result = run(
        [*bionemo_mnist(), "pretrain", "--accelerator", "cpu", *flags, "--steps", "30"]
        + ["--data-dir", str(mnist_root), "--out", str(out)]
    )

    line = assert_one_line_error(result, str(out / "pretrain"), "--use-distributed-optimizer", "new --out")
    assert line.startswith("bionemo-mnist: error: ")
    assert file_hashes(out, ignore=(LOCK_NAME,)) == before  # the lock's holder file aside
