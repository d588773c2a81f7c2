"""Specification: how training is run does not change what it computes (fp32, CPU, real MNIST).

* Resuming: `bionemo-mnist pretrain --steps 10`, then the same command with `--steps 20` and the same `--out`,
  continues at step 10 and ends with the weights and Adam state (moments and step) of an uninterrupted 20-step run
  (two ranks; one rank does 7 -> 14 -> 20, resuming twice), with or without Megatron's distributed optimizer, and
  also after a run killed in the middle of a checkpoint save: bit for bit (the `bitwise` tests), and, so that a
  failure tells a rounding from a lost Adam state, up to support.records.RESUME_ATOL. A distributed-optimizer run
  stopped on two ranks and resumed on one continues from its Adam state.
* The step as it was before issue 16 (NeMo's ProgressPrinter reading every metric every step, each microbatch's loss
  computed twice, Lightning copying every logged metric) trains bit for bit the same losses, weights and Adam state
  as the step now.
* Splitting the global batch of 128 images as 2 ranks x 64, 1 rank x 128, 1 rank x 4 accumulated microbatches
  of 32, or 2 ranks x 4 x 16 with Megatron's distributed optimizer gives the same per-step loss, validation loss
  and final weights, up to float summation order.

Every run is `bionemo-mnist` in a subprocess, through run_stage.py (see there) so that it logs every step (CSV row +
progress line), which the CLI cannot ask for; logging does not touch the numbers. The two-rank, 2 x 64 run is the
pretrain stage of the `pipeline_2rank` session fixture (conftest.py), which uses the same settings.
"""

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from run_stage import DIED_IN_SAVE

from bionemo.example_model.bridges.registry import SKIP_ENV
from bionemo.example_model.checkpoints import is_checkpoint
from support.cli_args import PRETRAIN_STEPS, VAL_CHECK_INTERVAL, run_stage_cli
from support.processes import Run, run
from support.records import (
    RESUME_ATOL,
    RESUME_RTOL,
    adam_steps,
    assert_same_training_state,
    checkpoint_common,
    checkpoint_model_weights,
    last_checkpoint,
    metric_by_step,
    printed_checkpoint,
    printed_steps_trained,
    restored_checkpoint,
    this_cpu,
)

GLOBAL_BATCH = 128


@dataclass(frozen=True)
class Split:
    """How the global batch of 128 is split, and whether Adam's state is sharded (Megatron's distributed optimizer)."""

    devices: int
    micro: int
    accumulate: int = 1
    distopt: bool = False


SPLITS = {
    "dp2_x_micro64": Split(2, 64),
    "dp1_x_micro128": Split(1, 128),
    "dp1_x_micro32_x_accumulate4": Split(1, 32, 4),
    "dp2_x_micro16_x_accumulate4_distopt": Split(2, 16, 4, distopt=True),
    "dp1_x_micro128_distopt": Split(1, 128, distopt=True),
}
# Splits that are the pretrain stage of a pipeline fixture (conftest.py): reused, not run again.
PIPELINE_SPLITS = {"dp2_x_micro64": "pipeline_2rank", "dp2_x_micro16_x_accumulate4_distopt": "pipeline_2rank_distopt"}
REFERENCE_SPLIT = "dp1_x_micro128"

# Tolerances for runs that split the global batch differently. The same 128 images enter every step, but the fp32
# sums run in a different order (per-rank partial sums + all-reduce, four accumulated microbatch gradients, or one
# matmul over 128), so each step differs by float rounding (~1e-7 relative) and Adam carries it forward. Measured
# after 20 steps: losses agree to 2e-7 relative, weights to 1.5e-7 absolute (|w| up to 0.6). atol 1e-6 is ~7x that
# and 1/1000 of one Adam step (lr 1e-3 moves a weight by up to ~1e-3), so a batch that lost, repeated or
# mis-weighted samples, which changes updates at the scale of the learning rate, cannot pass.
LOSS_RTOL = 1e-5
WEIGHT_RTOL, WEIGHT_ATOL = 1e-5, 1e-6


# --------------------------------------------------------------------------------------------------------------------
# Runs (each once per session, on first use)


def pretrain_cli_args(out: Path, data_dir: Path, steps: int, split: Split) -> list:
    return [
        "pretrain",
        "--accelerator", "cpu",
        "--devices", str(split.devices),
        "--steps", str(steps),
        "--micro-batch-size", str(split.micro),
        "--accumulate-grad-batches", str(split.accumulate),
        "--val-check-interval", str(VAL_CHECK_INTERVAL),
        "--data-dir", str(data_dir),
        "--out", str(out),
        *(["--use-distributed-optimizer"] if split.distopt else []),
    ]  # fmt: skip


PER_STEP_LOGS = {"BIONEMO_TEST_LOG_EVERY_N_STEPS": "1"}


def model_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    """The model's tensors (no optimizer state) of the run's final checkpoint, by parameter name."""
    return checkpoint_model_weights(last_checkpoint(run_dir))


def succeeded(result: Run) -> Run:
    assert result.returncode == 0, result.describe()
    return result


@pytest.fixture(scope="session")
def split_runs(tmp_path_factory, mnist_root, request):
    """`get(split)` -> the `pretrain/` run dir of 20 steps of that split (run once, on first use)."""
    done: dict[str, Path] = {}

    def get(split: str) -> Path:
        if split not in done:
            if split in PIPELINE_SPLITS:  # the same run as a pipeline's pretrain stage: reuse it
                pipeline = request.getfixturevalue(PIPELINE_SPLITS[split])
                succeeded(pipeline.run)
                done[split] = pipeline.out / "pretrain"
            else:
                out = tmp_path_factory.mktemp(split) / "out"
                args = pretrain_cli_args(out, mnist_root, PRETRAIN_STEPS, SPLITS[split])
                succeeded(run([*run_stage_cli(), *args], env=PER_STEP_LOGS))
                done[split] = out / "pretrain"
        return done[split]

    return get


@dataclass
class ResumedRuns:
    runs: list[Run]  # one per segment
    run_dir: Path  # the `pretrain/` dir the runs share
    interrupted: Path  # a copy of `pretrain/` as the first run left it


@pytest.fixture(scope="session")
def resumed_runs(tmp_path_factory, mnist_root):
    """
    `get(split, segments)` -> ResumedRuns: the same `pretrain` command and --out, run once per segment with
    `--steps` set to the segment's end, e.g. (7, 14, 20): 7 steps, resumed to 14, resumed again to 20."""
    done: dict[tuple, ResumedRuns] = {}

    def get(split: str, segments: tuple[int, ...]) -> ResumedRuns:
        if (split, segments) not in done:
            base = tmp_path_factory.mktemp(f"resume-{split}")
            runs = []
            for steps in segments:
                args = pretrain_cli_args(base / "out", mnist_root, steps, SPLITS[split])
                runs.append(succeeded(run([*run_stage_cli(), *args], env=PER_STEP_LOGS)))
                if len(runs) == 1:
                    shutil.copytree(base / "out" / "pretrain", base / "interrupted")
            done[split, segments] = ResumedRuns(runs, base / "out" / "pretrain", base / "interrupted")
        return done[split, segments]

    return get


# (split, where the runs stop), resumed and compared with the uninterrupted run of the same split. One rank resumes
# twice: the data position a resumed run saves is what the next resume starts from. The others resume once (each
# two-rank run costs ~35 s). The distributed-optimizer cases need bridges.all_devices' three `distributed_optimizer_*`
# patches (torch's Adam: megatron-core cannot restore its state without them).
RESUME_CASES = [
    pytest.param("dp1_x_micro128", (7, 14, PRETRAIN_STEPS), id="1rank", marks=pytest.mark.slow),
    pytest.param("dp2_x_micro64", (10, PRETRAIN_STEPS), id="2rank", marks=[pytest.mark.slow, pytest.mark.multirank]),
    pytest.param("dp1_x_micro128_distopt", (10, PRETRAIN_STEPS), id="1rank-distopt", marks=pytest.mark.slow),
    pytest.param(
        "dp2_x_micro16_x_accumulate4_distopt",
        (10, PRETRAIN_STEPS),
        id="2rank-distopt",
        marks=[pytest.mark.slow, pytest.mark.multirank],
    ),
]


# --------------------------------------------------------------------------------------------------------------------
# Resume


def assert_same_losses(run_dir: Path, uninterrupted: Path, steps: range) -> None:
    """The run logged exactly the uninterrupted run's training loss at each of `steps` (so a failure names the first
    step that rounded differently)."""
    losses = metric_by_step(run_dir / "csv" / "metrics.csv", "reduced_train_loss")
    expected = metric_by_step(uninterrupted / "csv" / "metrics.csv", "reduced_train_loss")
    assert set(steps) <= set(losses), sorted(losses)
    differing = {s: (losses[s], expected[s]) for s in losses if losses[s] != expected[s]}
    assert not differing, (this_cpu(), differing)


@pytest.mark.parametrize(("split", "segments"), RESUME_CASES)
def test_rerun_with_the_same_out_resumes_at_the_step_after_the_last_checkpoint(resumed_runs, split, segments):
    case = resumed_runs(split, segments)
    runs, run_dir = case.runs, case.run_dir
    assert printed_steps_trained(runs[0].stdout) == list(range(segments[0])), runs[0].describe()
    for previous, resumed, previous_end, end in zip(runs, runs[1:], segments, segments[1:]):
        # The run before reported the checkpoint of its last step...
        reported = printed_checkpoint(previous.stdout, "pretrain")
        assert reported.parent == run_dir / "checkpoints" and reported.name.endswith("-last"), reported
        assert f"step={previous_end - 1}-" in reported.name  # NeMo names a checkpoint by its last step's index
        # ...the resumed run restored exactly that one (Lightning loads from its weights/ folder)...
        assert restored_checkpoint(resumed) == reported
        # ...and trained exactly the steps after it: none repeated, none skipped.
        assert printed_steps_trained(resumed.stdout) == list(range(previous_end, end)), resumed.describe()
    final = printed_checkpoint(runs[-1].stdout, "pretrain")
    assert final == last_checkpoint(run_dir)
    assert checkpoint_common(final)["global_step"] == PRETRAIN_STEPS


@pytest.mark.parametrize(("split", "segments"), RESUME_CASES)
def test_resumed_training_ends_where_the_uninterrupted_run_does_up_to_rounding(
    resumed_runs, split_runs, split, segments
):
    run_dir = resumed_runs(split, segments).run_dir
    uninterrupted = split_runs(split)
    losses = metric_by_step(run_dir / "csv" / "metrics.csv", "reduced_train_loss")
    expected = metric_by_step(uninterrupted / "csv" / "metrics.csv", "reduced_train_loss")
    assert set(range(segments[-2], PRETRAIN_STEPS)) <= set(losses)
    assert losses == pytest.approx({s: expected[s] for s in losses}, rel=RESUME_RTOL)
    assert_same_training_state(
        last_checkpoint(run_dir), last_checkpoint(uninterrupted), rtol=RESUME_RTOL, atol=RESUME_ATOL
    )


@pytest.mark.bitwise
@pytest.mark.parametrize(("split", "segments"), RESUME_CASES)
def test_resumed_training_ends_bitwise_equal_to_an_uninterrupted_run(resumed_runs, split_runs, split, segments):
    run_dir = resumed_runs(split, segments).run_dir
    uninterrupted = split_runs(split)
    # The steps the last resumed run trained have exactly the uninterrupted run's losses...
    assert_same_losses(run_dir, uninterrupted, range(segments[-2], PRETRAIN_STEPS))
    # ...and it ends with exactly the same weights, Adam moments and Adam step.
    assert_same_training_state(last_checkpoint(run_dir), last_checkpoint(uninterrupted))


@pytest.mark.parametrize(("split", "segments"), RESUME_CASES)
def test_adam_step_count_after_resuming_equals_the_number_of_steps_taken(resumed_runs, split, segments):
    """
    Adam's bias correction uses its step count, so a resumed run must count on from the checkpoint's. (Megatron's
    distributed optimizer restores one step tensor shared by every parameter, which torch's Adam then advances once
    per parameter per step: bridges.all_devices' `distributed_optimizer_step_per_param`.)
    """
    assert adam_steps(last_checkpoint(resumed_runs(split, segments).run_dir)) == {PRETRAIN_STEPS}


@pytest.mark.parametrize(("split", "segments"), RESUME_CASES)
def test_resumed_checkpoint_records_the_samples_consumed_by_the_whole_run(resumed_runs, split, segments):
    """
    The data position saved in a checkpoint is what a further resume starts from, so it must count every sample of
    the run, before and after each resume: 20 steps x 128 = 2560 (the checkpoint's name carries it too).
    """
    ckpt = last_checkpoint(resumed_runs(split, segments).run_dir)
    consumed = checkpoint_common(ckpt)["MNISTDataModule"]["consumed_samples"]
    assert consumed == PRETRAIN_STEPS * GLOBAL_BATCH, f"{ckpt.name}: consumed_samples {consumed}"
    assert f"consumed_samples={PRETRAIN_STEPS * GLOBAL_BATCH}.0" in ckpt.name


KILL_MID_SAVE_CASES = [
    pytest.param("dp1_x_micro128", marks=pytest.mark.slow),
    pytest.param("dp1_x_micro128_distopt", marks=pytest.mark.slow),
    pytest.param("dp2_x_micro16_x_accumulate4_distopt", marks=[pytest.mark.slow, pytest.mark.multirank]),
]


@dataclass
class KilledMidSave:
    run_dir: Path  # the `pretrain/` dir both runs share
    torn: list[tuple[str, bool, bool]]  # after the kill: (name, has weights/, is a whole checkpoint) of step-19 dirs
    previous: Path  # the last whole checkpoint after the kill
    previous_was_whole: bool
    resumed: Run  # the same command again


@pytest.fixture(scope="session")
def killed_mid_save(tmp_path_factory, mnist_root):
    """`get(split)`: a 20-step run of that split killed in its step-20 checkpoint save, then run again (once)."""
    done: dict[str, KilledMidSave] = {}

    def get(split: str) -> KilledMidSave:
        if split not in done:
            out = tmp_path_factory.mktemp(f"killed-{split}") / "out"
            args = [*run_stage_cli(), *pretrain_cli_args(out, mnist_root, PRETRAIN_STEPS, SPLITS[split])]
            killed = run(args, env={**PER_STEP_LOGS, "BIONEMO_TEST_DIE_IN_SAVE_AT_STEP": str(PRETRAIN_STEPS)})
            assert killed.returncode == DIED_IN_SAVE, killed.describe()
            checkpoints = out / "pretrain" / "checkpoints"
            torn = [
                (p.name, (p / "weights").is_dir(), is_checkpoint(p))
                for p in checkpoints.iterdir()
                if p.is_dir() and f"step={PRETRAIN_STEPS - 1}-" in p.name
            ]
            previous = last_checkpoint(out / "pretrain")
            previous_was_whole = is_checkpoint(previous)
            resumed = run(args, env=PER_STEP_LOGS)
            done[split] = KilledMidSave(out / "pretrain", torn, previous, previous_was_whole, resumed)
        return done[split]

    return get


@pytest.mark.parametrize("split", KILL_MID_SAVE_CASES)
def test_a_run_killed_mid_save_keeps_its_previous_checkpoint_and_resumes_from_it(killed_mid_save, split_runs, split):
    case = killed_mid_save(split)
    # The save it died in left weights but no context: not a checkpoint...
    assert case.torn and all(weights and not whole for _, weights, whole in case.torn), case.torn
    # ...and the checkpoint before it is whole.
    assert f"step={VAL_CHECK_INTERVAL - 1}-" in case.previous.name and case.previous_was_whole, case.previous
    # The same command resumes from that checkpoint, trains the steps after it, and ends where the run would have.
    resumed = succeeded(case.resumed)
    assert restored_checkpoint(resumed) == case.previous
    assert printed_steps_trained(resumed.stdout) == list(range(VAL_CHECK_INTERVAL, PRETRAIN_STEPS))
    assert_same_training_state(
        last_checkpoint(case.run_dir), last_checkpoint(split_runs(split)), rtol=RESUME_RTOL, atol=RESUME_ATOL
    )


@pytest.mark.bitwise
@pytest.mark.parametrize("split", KILL_MID_SAVE_CASES)
def test_a_run_killed_mid_save_resumes_to_bitwise_the_weights_of_the_uninterrupted_run(
    killed_mid_save, split_runs, split
):
    case = killed_mid_save(split)
    succeeded(case.resumed)
    assert_same_losses(case.run_dir, split_runs(split), range(VAL_CHECK_INTERVAL, PRETRAIN_STEPS))
    assert_same_training_state(last_checkpoint(case.run_dir), last_checkpoint(split_runs(split)))


# The step as it was before issue 16: NeMo's ProgressPrinter turned every logged metric into a Python number every
# step, each microbatch's loss was computed twice (in the module's `training_step`, to log it, and in NeMo's call),
# Lightning copied each logged metric on every `log`, OneLogger's disabled hooks reset a logger's level, and
# NeMo's events and Lightning's `log` read method signatures on every call, the CPU optimizer step and `log` ran
# under the CUDA-as-CPU mode, and Megatron's one-member all-reduces went to gloo. run_stage.py puts the printer and
# the second loss back; the switch takes those bridges off.
SPEED_BRIDGES = (
    "result_metric_to_same_device",
    "one_logger_level_set_once",
    "log_reads_training_step_signature_once",
    "megatron_callbacks_read_signatures_once",
    "cuda_free_calls_outside_the_cpu_mode",
    "one_member_all_reduce_returns_at_once",
)
OLD_STEP_ENV = {**PER_STEP_LOGS, "BIONEMO_TEST_OLD_STEP": "1", SKIP_ENV: ",".join(SPEED_BRIDGES)}


@pytest.fixture(scope="session")
def old_step_run(tmp_path_factory, mnist_root) -> tuple[Run, Path]:
    """The reference split's 20 steps with the old per-step reads and copies: (the run, its `pretrain/` dir)."""
    out = tmp_path_factory.mktemp("old-step") / "out"
    args = pretrain_cli_args(out, mnist_root, PRETRAIN_STEPS, SPLITS[REFERENCE_SPLIT])
    return succeeded(run([*run_stage_cli(), *args], env=OLD_STEP_ENV)), out / "pretrain"


@pytest.mark.slow
@pytest.mark.bitwise
def test_the_step_without_its_old_per_step_metric_reads_trains_bitwise_the_same(old_step_run, split_runs):
    """Issue 16's progress display and speed bridges change when metrics are read or copied, not what is computed."""
    result, run_dir = old_step_run
    # The old step ran: NeMo's printer printed every step, and no speed bridge was installed.
    assert f"iteration {PRETRAIN_STEPS - 1}/{PRETRAIN_STEPS - 1}" in result.stdout, result.describe()
    installed = result.stdout.split("run_stage: bridges installed: ")[1].split()[0].split(",")
    assert not set(SPEED_BRIDGES) & set(installed) and "distributed_optimizer_step_per_param" in installed
    reference = split_runs(REFERENCE_SPLIT)
    assert_same_losses(run_dir, reference, range(PRETRAIN_STEPS))
    assert metric_by_step(run_dir / "csv" / "metrics.csv", "val_loss") == metric_by_step(
        reference / "csv" / "metrics.csv", "val_loss"
    )
    assert_same_training_state(last_checkpoint(run_dir), last_checkpoint(reference))


@pytest.mark.slow
@pytest.mark.multirank
def test_a_distributed_optimizer_run_resumed_on_fewer_ranks_continues_from_its_adam_state(
    tmp_path, mnist_root, resumed_runs, split_runs
):
    """
    Megatron's fully reshardable optimizer checkpoint holds Adam's state per parameter, not per rank: a two-rank
    run interrupted after 10 steps, resumed on one rank with the same global batch, ends where the uninterrupted
    two-rank run does, up to the float summation order of a different split (the tolerances of the split tests
    below; restarting Adam's moments or step would move the weights by ~1e-3, the scale of one step).
    """
    two_ranks = "dp2_x_micro16_x_accumulate4_distopt"
    shutil.copytree(resumed_runs(two_ranks, (10, PRETRAIN_STEPS)).interrupted, tmp_path / "out" / "pretrain")
    args = pretrain_cli_args(tmp_path / "out", mnist_root, PRETRAIN_STEPS, SPLITS["dp1_x_micro128_distopt"])

    resumed = succeeded(run([*run_stage_cli(), *args], env=PER_STEP_LOGS))

    assert f"step={10 - 1}-" in restored_checkpoint(resumed).name
    assert printed_steps_trained(resumed.stdout) == list(range(10, PRETRAIN_STEPS))
    final, expected = last_checkpoint(tmp_path / "out" / "pretrain"), last_checkpoint(split_runs(two_ranks))
    assert adam_steps(final) == {PRETRAIN_STEPS}
    assert_same_training_state(final, expected, rtol=WEIGHT_RTOL, atol=WEIGHT_ATOL)


# --------------------------------------------------------------------------------------------------------------------
# Splitting the global batch

SPLIT_CASES = [
    pytest.param("dp2_x_micro64", marks=[pytest.mark.slow, pytest.mark.multirank]),
    pytest.param("dp1_x_micro32_x_accumulate4", marks=pytest.mark.slow),
    pytest.param("dp2_x_micro16_x_accumulate4_distopt", marks=[pytest.mark.slow, pytest.mark.multirank]),
]


@pytest.mark.parametrize("split", SPLIT_CASES)
def test_training_loss_of_every_step_does_not_depend_on_how_the_global_batch_is_split(split_runs, split):
    losses = metric_by_step(split_runs(split) / "csv" / "metrics.csv", "reduced_train_loss")
    expected = metric_by_step(split_runs(REFERENCE_SPLIT) / "csv" / "metrics.csv", "reduced_train_loss")
    assert sorted(expected) == list(range(PRETRAIN_STEPS))
    assert sorted(losses) == sorted(expected)
    assert losses == pytest.approx(expected, rel=LOSS_RTOL), {s: (losses[s], expected[s]) for s in expected}


@pytest.mark.parametrize("split", SPLIT_CASES)
def test_validation_loss_does_not_depend_on_how_the_global_batch_is_split(split_runs, split):
    losses = metric_by_step(split_runs(split) / "csv" / "metrics.csv", "val_loss")
    expected = metric_by_step(split_runs(REFERENCE_SPLIT) / "csv" / "metrics.csv", "val_loss")
    assert sorted(expected) == [VAL_CHECK_INTERVAL - 1, PRETRAIN_STEPS - 1]
    assert losses == pytest.approx(expected, rel=LOSS_RTOL)


@pytest.mark.parametrize("split", SPLIT_CASES)
def test_final_weights_do_not_depend_on_how_the_global_batch_is_split(split_runs, split):
    weights, expected = model_weights(split_runs(split)), model_weights(split_runs(REFERENCE_SPLIT))
    assert sorted(weights) == sorted(expected) and expected
    for key in expected:
        torch.testing.assert_close(weights[key], expected[key], rtol=WEIGHT_RTOL, atol=WEIGHT_ATOL, msg=key)


@pytest.mark.parametrize("split", [REFERENCE_SPLIT, *SPLIT_CASES])
def test_logged_validation_loss_is_the_mean_over_every_validation_image(split_runs, mnist_root, split):
    """
    The last `val_loss` of the CSV log is the mean reconstruction error over all 5000 validation images under the
    final weights, recomputed here in one batch: whatever the micro batch, however many ranks, and although the
    last validation step holds only 5000 % 128 = 8 real images (the rest is padding the loss must ignore).
    """
    from bionemo.example_model.config import PretrainConfig
    from bionemo.example_model.data import MNISTDataModule
    from bionemo.example_model.losses import MSELossReduction
    from bionemo.example_model.model import ExampleModel

    run_dir = split_runs(split)
    logged = metric_by_step(run_dir / "csv" / "metrics.csv", "val_loss")[PRETRAIN_STEPS - 1]
    model = ExampleModel(PretrainConfig())
    model.load_state_dict(model_weights(run_dir))
    data = MNISTDataModule(data_dir=mnist_root)
    data.setup()
    val = data.splits["val"]
    batch = val.get_batch(torch.arange(len(val)))
    with torch.no_grad():
        expected = MSELossReduction().per_sample_loss(batch, model(batch["data"])).double().mean().item()
    assert len(val) == 5000
    assert logged == pytest.approx(expected, rel=LOSS_RTOL)
