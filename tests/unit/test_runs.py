"""Specification of `bionemo.example_model.runs`: what running a stage again decides, the --out lock, and --out
checks. Checkpoints here are stand-ins with the files NeMo's checkpoints are recognised by (weights/metadata.json
and context/); the real runs are in tests/integration/test_run_lifecycle.py."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bionemo.example_model import runs
from bionemo.example_model.errors import ExampleModelError

SETTINGS = {"--micro-batch-size": 64, "--lr": 0.001}


def fake_checkpoint(stage_dir: Path, steps: int, whole: bool = True) -> Path:
    """A `-last` checkpoint folder named as NeMo names ours (the 0-based index of its last step)."""
    ckpt = stage_dir / "checkpoints" / f"epoch=0-step={steps - 1}-consumed_samples={steps * 64}.0-last"
    (ckpt / "weights").mkdir(parents=True)
    if whole:
        (ckpt / "weights" / "metadata.json").write_text("{}")
        (ckpt / "context").mkdir()
    return ckpt


def pretrain(tmp_path: Path, steps: int, **settings) -> runs.Stage:
    return runs.Stage("pretrain", tmp_path / "pretrain", {**SETTINGS, **settings}, steps=steps)


def test_a_fresh_stage_trains_and_records_what_it_is_built_from(tmp_path):
    stage = pretrain(tmp_path, 4)
    assert stage.plan() == runs.Plan(train=True)
    stage.begin()
    record = json.loads((tmp_path / "pretrain" / "record" / "run.json").read_text())
    assert (record["settings"], record["steps"], record["status"]) == (SETTINGS, 4, "running")


def test_a_stage_whose_last_checkpoint_has_the_steps_asked_for_has_nothing_to_do(tmp_path, capsys):
    pretrain(tmp_path, 4).begin()
    ckpt = fake_checkpoint(tmp_path / "pretrain", 4)
    assert pretrain(tmp_path, 4).plan() == runs.Plan(train=False, checkpoint=ckpt)
    assert "nothing to do" in capsys.readouterr().out


def test_more_steps_continue_the_stage(tmp_path, capsys):
    pretrain(tmp_path, 4).begin()
    ckpt = fake_checkpoint(tmp_path / "pretrain", 4)
    assert pretrain(tmp_path, 6).plan() == runs.Plan(train=True)
    assert f"resuming {ckpt} at step 4 of 6" in capsys.readouterr().out


def test_fewer_steps_than_done_are_refused_naming_the_flag_and_the_ways_out(tmp_path):
    pretrain(tmp_path, 4).begin()
    fake_checkpoint(tmp_path / "pretrain", 4)
    with pytest.raises(ExampleModelError, match=r"already trained 4 steps, more than --steps 2.*new --out.*--restart"):
        pretrain(tmp_path, 2).plan()


def test_another_setting_is_refused_naming_the_flag_and_both_values(tmp_path):
    pretrain(tmp_path, 4).begin()
    with pytest.raises(
        ExampleModelError, match="was run with --micro-batch-size 64, this run asks for --micro-batch-size 32"
    ):
        pretrain(tmp_path, 4, **{"--micro-batch-size": 32}).plan()


def test_restart_keeps_the_previous_run_beside_and_starts_fresh(tmp_path):
    pretrain(tmp_path, 4).begin()
    old = fake_checkpoint(tmp_path / "pretrain", 4)
    assert pretrain(tmp_path, 2, **{"--lr": 0.01}).plan(restart=True) == runs.Plan(train=True)
    assert (tmp_path / "pretrain.previous-1" / old.relative_to(tmp_path / "pretrain")).is_dir()


def test_a_changed_input_is_refused_for_a_single_stage_and_reruns_the_stage_in_a_pipeline(tmp_path):
    trunk_a, trunk_b = fake_checkpoint(tmp_path / "a", 4), fake_checkpoint(tmp_path / "b", 4)
    (trunk_b / "weights" / "metadata.json").write_text('{"other": 1}')

    def finetune(trunk: Path, flag: str | None) -> runs.Stage:
        return runs.Stage(
            "finetune", tmp_path / "finetune", SETTINGS, steps=4, input_checkpoint=trunk, input_flag=flag
        )

    finetune(trunk_a, "--pretrain-ckpt").begin()
    fake_checkpoint(tmp_path / "finetune", 4)
    with pytest.raises(ExampleModelError, match="--pretrain-ckpt now names another checkpoint"):
        finetune(trunk_b, "--pretrain-ckpt").plan()
    assert finetune(trunk_b, None).plan() == runs.Plan(train=True)
    assert (tmp_path / "finetune.previous-1" / "checkpoints").is_dir()


def test_an_interrupted_save_is_set_aside_whole_and_the_stage_resumes_from_the_last_whole_checkpoint(tmp_path, capsys):
    pretrain(tmp_path, 6).begin()
    whole = fake_checkpoint(tmp_path / "pretrain", 2)
    torn = fake_checkpoint(tmp_path / "pretrain", 4, whole=False)
    marker = torn.with_name(torn.name + "-unfinished")
    marker.touch()
    assert pretrain(tmp_path, 6).plan() == runs.Plan(train=True)
    kept = tmp_path / "pretrain" / "checkpoints-unfinished"
    assert sorted(p.name for p in kept.iterdir()) == sorted([torn.name, marker.name])
    assert sorted((tmp_path / "pretrain" / "checkpoints").iterdir()) == [whole]
    (line,) = capsys.readouterr().out.splitlines()
    assert "interrupted" in line and f"resuming from {whole} at step 2" in line


def test_an_out_that_is_a_file_or_lies_under_one_is_refused(tmp_path):
    file = tmp_path / "notes.txt"
    file.write_text("x")
    for out in (file, file / "sub"):
        with pytest.raises(ExampleModelError, match=f"{file} is not a directory"):
            runs.check_out_dir(out)
    runs.check_out_dir(tmp_path / "new" / "out")


HOLD_LOCK = """
import sys
from pathlib import Path
from bionemo.example_model import runs
with runs.out_lock(Path(sys.argv[1])):
    print("held", flush=True)
    sys.stdin.read()
"""


@pytest.fixture
def holder(tmp_path):
    """Another process holding the lock of tmp_path/out until its stdin closes."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(tmp_path / "out")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline() == "held\n"
    yield proc
    proc.kill()
    proc.wait()


def test_a_second_run_into_a_locked_out_is_refused_naming_the_holder(tmp_path, holder):
    with pytest.raises(ExampleModelError, match=f"in use by another bionemo-mnist run \\(pid {holder.pid} on "):
        with runs.out_lock(tmp_path / "out"):
            pass


@pytest.mark.parametrize("ending", ["exit", "SIGKILL"])
def test_the_lock_goes_with_its_holder_however_it_ends(tmp_path, holder, ending):
    if ending == "exit":
        holder.stdin.close()
    else:
        os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    with runs.out_lock(tmp_path / "out"):
        assert f"pid {os.getpid()} on" in (tmp_path / "out" / runs.LOCK_NAME).read_text()
