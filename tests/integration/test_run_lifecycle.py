"""Specification of the run lifecycle of `bionemo-mnist` on CPU: what running a command again into the same `--out`
does (after it finished, with more or fewer steps, with other settings), an interrupted checkpoint save, logs that
stay whole across resumes, two runs into one `--out`, divergence, Ctrl-C on two ranks, the inputs that must be
answered with one `error:` line, and what the terminal shows (progress, and no framework chatter unless --verbose).

Every run is `bionemo-mnist` in a subprocess at tiny step counts (4 steps of 64 images, a checkpoint and validation
every 2); most go through run_stage.py so that every step gets a CSV row and a progress line.
"""

import contextlib
import json
import os
import re
import shutil
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
from run_stage import DIED_IN_SAVE

from bionemo.example_model.checkpoints import is_checkpoint
from bionemo.example_model.logs import LOG_NAME
from bionemo.example_model.mnist_files import raw_dir
from support.cli_args import MICRO_BATCH_SIZE, run_stage_cli, stage_args
from support.processes import Run, assert_one_line_error, bionemo_mnist, run, run_in_terminal, session_members, start
from support.records import (
    PROGRESS_LINE,
    file_hashes,
    last_checkpoint,
    metric_by_step,
    printed_checkpoint,
    printed_progress,
    printed_steps_trained,
    read_csv_rows,
)

pytestmark = pytest.mark.slow

STEPS = 4
VAL_EVERY = 2
PER_STEP_LOGS = {"BIONEMO_TEST_LOG_EVERY_N_STEPS": "1"}
LOCK_FILE = ".bionemo-mnist.lock"  # the lock's holder file: rewritten by every run that takes the lock


def pipeline_cmd(out: Path, data_dir: Path, *extra: str, pretrain_steps: int = STEPS) -> list[str]:
    steps = ("--pretrain-steps", str(pretrain_steps), "--finetune-steps", str(STEPS))
    return [*run_stage_cli(), *stage_args("pipeline", out, data_dir, *steps, "--val-check-interval", "2", *extra)]


def pretrain_cmd(out: Path, data_dir: Path, steps: int = STEPS, *extra: str) -> list[str]:
    args = stage_args("pretrain", out, data_dir, "--steps", str(steps), "--val-check-interval", str(VAL_EVERY))
    return [*run_stage_cli(), *args, *extra]


def steps_logged(metrics_csv: Path, key: str) -> Counter:
    """How often each step has a value of `key` in a CSV log."""
    return Counter(int(float(r["step"])) for r in read_csv_rows(metrics_csv) if r.get(key))


# --------------------------------------------------------------------------------------------------------------------
# 1, 3, 4: the same pipeline run again, with fewer steps, another micro batch, and more pretrain steps


@pytest.fixture(scope="module")
def reruns(tmp_path_factory, mnist_root) -> dict:
    """One --out through a sequence of pipeline runs; each run's result and the files before and after it."""
    out = tmp_path_factory.mktemp("reruns") / "out"
    done: dict = {}

    def step(name: str, cmd: list[str]) -> None:
        before = file_hashes(out, ignore=(LOCK_FILE,)) if out.exists() else {}
        done[name] = (run(cmd, env=PER_STEP_LOGS), before, file_hashes(out, ignore=(LOCK_FILE,)))

    step("first", pipeline_cmd(out, mnist_root))
    done["first_summary"] = json.loads((out / "summary.json").read_text())
    first_log = out / "pretrain" / "csv" / "metrics.csv"
    done["first_pretrain_losses"] = metric_by_step(first_log, "reduced_train_loss")
    done["first_val_losses"] = metric_by_step(first_log, "val_loss")
    step("again", pipeline_cmd(out, mnist_root))
    done["again_summary"] = json.loads((out / "summary.json").read_text())
    step("fewer_steps", pipeline_cmd(out, mnist_root, pretrain_steps=STEPS - 2))
    step("other_micro_batch", [*pipeline_cmd(out, mnist_root), "--micro-batch-size", "32"])
    step("more_pretrain_steps", pipeline_cmd(out, mnist_root, pretrain_steps=STEPS + 2))
    done["out"] = out
    return done


def test_the_first_pipeline_run_succeeds(reruns):
    result, _, _ = reruns["first"]
    assert result.returncode == 0, result.describe()


def test_rerunning_a_finished_pipeline_exits_0_trains_nothing_and_reports_the_same_summary(reruns):
    first, again = reruns["first"][0], reruns["again"][0]
    assert again.returncode == 0, again.describe()
    assert printed_steps_trained(again.stdout) == []  # no stage trained
    result_line = [line for line in first.stdout.splitlines() if line.startswith('{"test_accuracy"')]
    assert result_line and result_line[0] in again.stdout.splitlines(), again.describe()
    assert reruns["again_summary"] == reruns["first_summary"]
    for stage in ("pretrain", "finetune"):
        assert "nothing to do" in again.stdout, again.describe()
        assert printed_checkpoint(again.stdout, stage) == printed_checkpoint(first.stdout, stage)


def test_rerunning_a_finished_pipeline_leaves_every_file_as_it_was(reruns):
    """Logs, checkpoints, predictions, plots, summary: not one byte changes (the lock's holder file aside)."""
    _, before, after = reruns["again"]
    assert before and after == before


@pytest.mark.parametrize(
    ("rerun", "flag"), [("fewer_steps", "--pretrain-steps"), ("other_micro_batch", "--micro-batch-size")]
)
def test_a_rerun_with_settings_the_run_cannot_continue_from_is_one_error_line_and_changes_nothing(reruns, rerun, flag):
    result, before, after = reruns[rerun]
    line = assert_one_line_error(result, flag, "--restart", "new --out")
    assert str(reruns["out"] / "pretrain") in line
    assert after == before


def test_more_pretrain_steps_extend_pretrain_and_retrain_finetune_on_the_new_trunk(reruns):
    result, _, _ = reruns["more_pretrain_steps"]
    assert result.returncode == 0, result.describe()
    # Pretrain continues at step 4; finetune starts over (its old checkpoint was built on the old trunk).
    assert printed_steps_trained(result.stdout) == [STEPS, STEPS + 1, *range(STEPS)], result.describe()
    out = reruns["out"]
    summary = json.loads((out / "summary.json").read_text())
    new_pretrain = printed_checkpoint(result.stdout, "pretrain")
    assert Path(summary["pretrain_checkpoint"]) == new_pretrain == last_checkpoint(out / "pretrain")
    assert f"step={STEPS + 1}-" in new_pretrain.name
    record = json.loads((out / "finetune" / "record" / "run.json").read_text())
    assert Path(record["input_checkpoint"]) == new_pretrain
    # The superseded finetune run is kept beside, not deleted.
    (previous,) = out.glob("finetune.previous-*")
    assert is_checkpoint(last_checkpoint(previous))


def test_after_the_extension_every_pretrain_step_is_logged_once_at_its_own_step_and_history_is_kept(reruns):
    metrics = reruns["out"] / "pretrain" / "csv" / "metrics.csv"
    assert steps_logged(metrics, "reduced_train_loss") == Counter(range(STEPS + 2))
    losses = metric_by_step(metrics, "reduced_train_loss")
    assert {s: losses[s] for s in range(STEPS)} == reruns["first_pretrain_losses"]
    # The first run's validations are kept; the extension's are logged once each (where Lightning runs them after
    # resuming from a checkpoint saved at the end of training: at its epoch boundaries, not every 2 steps).
    val_logged = steps_logged(metrics, "val_loss")
    assert set(val_logged.values()) == {1}
    assert {s: v for s, v in metric_by_step(metrics, "val_loss").items() if s < STEPS} == reruns["first_val_losses"]
    header = list(read_csv_rows(metrics)[0])
    assert all(len(row) == len(header) and None not in row for row in read_csv_rows(metrics))


def test_finetune_given_a_finetune_checkpoint_as_pretrain_ckpt_is_one_error_line(reruns, tmp_path, mnist_root):
    finetune_ckpt = last_checkpoint(reruns["out"] / "finetune")
    cmd = [
        *bionemo_mnist(),
        *stage_args("finetune", tmp_path / "out", mnist_root, "--pretrain-ckpt", str(finetune_ckpt)),
    ]
    assert_one_line_error(run(cmd), "--pretrain-ckpt", str(finetune_ckpt), "finetune checkpoint")
    assert not list((tmp_path / "out").glob("**/checkpoints/*"))


# --------------------------------------------------------------------------------------------------------------------
# 2: a kill during the first checkpoint save


def test_a_kill_during_the_first_checkpoint_save_is_set_aside_and_the_rerun_starts_fresh_and_says_so(
    tmp_path, mnist_root
):
    out = tmp_path / "out"
    killed = run(pretrain_cmd(out, mnist_root), env={**PER_STEP_LOGS, "BIONEMO_TEST_DIE_IN_SAVE_AT_STEP": "2"})
    assert killed.returncode == DIED_IN_SAVE, killed.describe()
    torn = sorted(p.name for p in (out / "pretrain" / "checkpoints").iterdir())
    assert any(name.endswith("-unfinished") for name in torn), torn

    rerun = run(pretrain_cmd(out, mnist_root), env=PER_STEP_LOGS)

    assert rerun.returncode == 0, rerun.describe()
    said = [line for line in rerun.stdout.splitlines() if "interrupted" in line]
    assert len(said) == 1 and "set aside" in said[0] and "starting fresh" in said[0], rerun.describe()
    assert printed_steps_trained(rerun.stdout) == list(range(STEPS))
    kept = out / "pretrain" / "checkpoints-unfinished"
    assert sorted(p.name for p in kept.iterdir()) == torn  # kept whole, not deleted
    assert is_checkpoint(printed_checkpoint(rerun.stdout, "pretrain"))
    assert steps_logged(out / "pretrain" / "csv" / "metrics.csv", "reduced_train_loss") == Counter(range(STEPS))


# --------------------------------------------------------------------------------------------------------------------
# 5: two runs into one --out


def test_a_second_run_into_an_out_in_use_is_one_error_line_naming_the_holder_and_the_first_is_unharmed(
    tmp_path, mnist_root
):
    out = tmp_path / "out"
    long_run = [*bionemo_mnist(), *stage_args("pretrain", out, mnist_root, "--steps", "500")]
    first = start(long_run, tmp_path / "first.out")
    try:
        first.wait_for_output("pretrain step ")  # training (a progress line every 50 steps), so holding the --out
        second = run(long_run)
    finally:
        first_result = first.finish()
    assert_one_line_error(second, str(out), f"pid {first.proc.pid}", "another --out")
    assert first_result.returncode == 0, first_result.describe()
    metrics = read_csv_rows(out / "pretrain" / "csv" / "metrics.csv")
    assert metrics and all(None not in row and len(row) == len(metrics[0]) for row in metrics)
    assert sorted(p.name for p in (out / "pretrain" / "checkpoints").iterdir() if p.name.endswith("-last")) == [
        last_checkpoint(out / "pretrain").name
    ]
    # The lock went with the first run: the same command now runs (a finished run: nothing to do).
    assert run(long_run).returncode == 0


# --------------------------------------------------------------------------------------------------------------------
# 6: divergence


def test_a_diverging_run_stops_with_one_error_line_naming_stage_step_value_and_a_hint(tmp_path, mnist_root):
    out = tmp_path / "out"
    result = run([*bionemo_mnist(), *stage_args("pretrain", out, mnist_root, "--steps", "60", "--lr", "1e30")])
    line = assert_one_line_error(result, "pretrain", "diverged", "step 49", "--lr")
    assert "nan" in line or "inf" in line
    assert not list((out / "pretrain" / "checkpoints").glob("*"))  # nothing saved from a diverged model


@pytest.mark.parametrize("value", ["inf", "nan", "-inf"])
def test_a_learning_rate_that_is_not_a_finite_positive_number_is_one_error_line(tmp_path, value):
    result = run([*bionemo_mnist(), "pretrain", f"--lr={value}", "--out", str(tmp_path / "out")])
    assert_one_line_error(result, "--lr", repr(value))
    assert not (tmp_path / "out").exists()


def test_a_learning_rate_too_large_for_adams_float32_step_is_one_error_line(tmp_path):
    result = run([*bionemo_mnist(), "pretrain", "--lr=1e38", "--out", str(tmp_path / "out")])
    assert_one_line_error(result, "--lr", "'1e38'", "float32")
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------------------------------------------
# 7: Ctrl-C on two ranks


def ctrl_c(run_pid: int) -> None:
    """What Ctrl-C in a terminal does: SIGINT to the whole foreground process group, every rank."""
    os.killpg(run_pid, signal.SIGINT)


def ctrl_c_under_nox(run_pid: int) -> None:
    """
    Ctrl-C on `nox -s pipeline`, README's main command: every process gets SIGINT, and nox (nox/popen.py
    `shutdown_process`) gives its child, rank 0, 0.3 s before SIGTERM and 0.2 s more before SIGKILL.
    """
    os.killpg(run_pid, signal.SIGINT)
    for follow_up, after_s in ((signal.SIGTERM, 0.3), (signal.SIGKILL, 0.2)):
        time.sleep(after_s)
        with contextlib.suppress(ProcessLookupError):
            os.kill(run_pid, follow_up)


@pytest.mark.multirank
@pytest.mark.parametrize("stop", [ctrl_c, ctrl_c_under_nox], ids=["ctrl-c", "ctrl-c-under-nox"])
def test_stopping_a_two_rank_run_stops_every_rank_within_30_s(tmp_path, mnist_root, stop):
    out, pids = tmp_path / "out", tmp_path / "pids"
    cmd = [*run_stage_cli(), *stage_args("pretrain", out, mnist_root, "--devices", "2", "--steps", "100000")]
    job = start(cmd, tmp_path / "run.out", env={"BIONEMO_TEST_PID_DIR": str(pids), **PER_STEP_LOGS})
    try:
        job.wait_for_output("pretrain step 6/")
        assert len(list(pids.glob("process-*.json"))) == 2
        stop(job.proc.pid)
        deadline = time.monotonic() + 30
        while session_members(job.proc.pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        left = session_members(job.proc.pid)
    finally:
        result = job.finish(timeout=5)
    assert not left, f"still running 30 s after {stop.__name__}: {left}\n{result.describe()}"
    assert result.returncode != 0


# --------------------------------------------------------------------------------------------------------------------
# 8: inputs answered with one error line


def test_an_out_that_names_a_file_is_one_error_line_and_the_file_is_untouched(tmp_path):
    not_a_dir = tmp_path / "notes.txt"
    not_a_dir.write_text("mine\n")
    result = run([*bionemo_mnist(), "pretrain", "--out", str(not_a_dir)])
    assert_one_line_error(result, "--out", str(not_a_dir), "not a directory")
    assert not_a_dir.read_text() == "mine\n"


def test_a_negative_number_of_workers_is_one_error_line(tmp_path):
    result = run([*bionemo_mnist(), "pretrain", "--num-workers", "-1", "--out", str(tmp_path / "out")])
    assert_one_line_error(result, "--num-workers", "'-1'")
    assert not (tmp_path / "out").exists()


def test_a_full_disk_is_one_error_line_about_disk_space(tmp_path, mnist_root):
    """--out on a 256 KiB tmpfs (a mount namespace of its own): the first checkpoint does not fit."""
    out = tmp_path / "small-disk"
    out.mkdir()
    cmd = [*bionemo_mnist(), *stage_args("pretrain", out, mnist_root, "--steps", str(STEPS))]
    inner = f'mount -t tmpfs -o size=256k tmpfs {out} && exec "$@"'
    result = run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", inner, "sh", *cmd])
    assert_one_line_error(result, "space", str(out))


def test_a_stale_part_file_from_an_interrupted_data_preparation_is_removed_by_the_next_run(tmp_path, mnist_root):
    data_dir = tmp_path / "data"
    shutil.copytree(raw_dir(mnist_root), raw_dir(data_dir))
    stale = raw_dir(data_dir) / ".train-images-idx3-ubyte.k2j4h1.part"  # what a SIGKILL in the write leaves
    stale.write_bytes(b"\0" * 4096)
    cmd = [*bionemo_mnist(), *stage_args("pretrain", tmp_path / "out", data_dir, "--steps", "1")]
    result = run(cmd)
    assert result.returncode == 0, result.describe()
    assert not stale.exists()
    assert sorted(p.name for p in raw_dir(data_dir).iterdir()) == sorted(p.name for p in raw_dir(mnist_root).iterdir())


# --------------------------------------------------------------------------------------------------------------------
# bf16-mixed runs on CPU too


def test_a_short_bf16_mixed_pretrain_runs_on_cpu_to_a_finite_loss(tmp_path, mnist_root):
    out = tmp_path / "out"
    result = run([*pretrain_cmd(out, mnist_root), "--precision", "bf16-mixed"], env=PER_STEP_LOGS)
    assert result.returncode == 0, result.describe()
    losses = metric_by_step(out / "pretrain" / "csv" / "metrics.csv", "reduced_train_loss")
    assert sorted(losses) == list(range(STEPS))
    assert all(0 < v < float("inf") for v in losses.values()), losses
    assert is_checkpoint(printed_checkpoint(result.stdout, "pretrain"))


# --------------------------------------------------------------------------------------------------------------------
# What the terminal shows: the progress line, the package's own lines; the frameworks' messages go to the log file


@pytest.fixture(scope="module")
def eight_steps(tmp_path_factory, mnist_root) -> tuple[Run, Path]:
    """An 8-step pretrain, not on a terminal, with a progress line every 4 steps; and its --out."""
    out = tmp_path_factory.mktemp("eight-steps") / "out"
    result = run(pretrain_cmd(out, mnist_root, 8), env={"BIONEMO_TEST_LOG_EVERY_N_STEPS": "4"})
    assert result.returncode == 0, result.describe()
    return result, out


def test_the_progress_line_prints_the_exact_number_of_samples_consumed_so_far(eight_steps):
    """Printed every 4 steps, its count is that of the step it is printed at, not an average over the 4."""
    result, _ = eight_steps
    lines = printed_progress(result.stdout)
    assert [line["step"] for line in lines] == [4, 8], result.stdout[-3000:]
    global_batch = MICRO_BATCH_SIZE  # one rank, no accumulation
    assert [line["consumed_samples"] for line in lines] == [4 * global_batch, 8 * global_batch]


def test_on_a_terminal_the_progress_is_a_bar_with_eta_and_the_exact_counts(tmp_path, mnist_root):
    """The same run on a terminal: Lightning's bar, redrawn in place every 4 steps, and no plain progress line."""
    result = run_in_terminal(
        pretrain_cmd(tmp_path / "out", mnist_root, 8), env={"BIONEMO_TEST_LOG_EVERY_N_STEPS": "4"}
    )
    assert result.returncode == 0, result.describe()
    draws = [draw for draw in re.split(r"[\r\n]+", result.stdout) if draw.startswith("pretrain: ")]
    at = {step: [d for d in draws if f"| {step}/8 [" in d] for step in (4, 8)}
    assert at[4] and at[8], draws
    assert f"consumed_samples={4 * MICRO_BATCH_SIZE}," in at[4][-1], at[4]
    assert f"consumed_samples={8 * MICRO_BATCH_SIZE}," in at[8][-1] and "100%" in at[8][-1], at[8]
    assert re.search(r"\[\d+:\d+<\d+:\d+, loss=[-+.\deE]+,", at[4][-1]), at[4]  # elapsed < ETA, then the loss
    assert printed_progress(result.stdout) == []


# A line of the package's own logger on the terminal (logs.py): `2026-11-27 02:21:48,437 bionemo.example_model INFO`
PACKAGE_LOG_LINE = re.compile(r"^\S+ \S+ bionemo\.example_model INFO ")


def test_the_terminal_shows_only_the_packages_lines_and_the_log_file_keeps_the_frameworks(eight_steps):
    result, out = eight_steps
    terminal = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    others = [
        line
        for line in terminal
        if not (PROGRESS_LINE.match(line) or line.startswith("pretrain checkpoint: ") or PACKAGE_LOG_LINE.match(line))
    ]
    assert not others, others
    log = (out / LOG_NAME).read_text()
    for said in ("Rank 0 has data parallel group", "Transformer Engine and Apex are not installed", "max_steps=8"):
        assert said in log and said not in result.stdout + result.stderr, said


def test_verbose_prints_the_frameworks_messages_too(tmp_path, mnist_root):
    result = run([*pretrain_cmd(tmp_path / "out", mnist_root, 2), "--verbose"])
    assert result.returncode == 0, result.describe()
    for said in ("Rank 0 has data parallel group", "Transformer Engine and Apex are not installed", "max_steps=2"):
        assert said in result.stdout + result.stderr, said
