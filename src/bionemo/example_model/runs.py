"""
The run lifecycle of `bionemo-mnist`: what each stage was built from and what running it again does, one run per
`--out` at a time, and checkpoint saves that were interrupted.

Each stage records in `OUT/STAGE/record/run.json` the settings that shape its result, its input checkpoint (path and
a fingerprint of its weights) and its steps. (A subfolder: NeMo's logger moves every file lying directly in the stage
folder into `run_N/` when a run resumes.) Running a command again into the same `--out`:

- a stage whose last whole checkpoint is at the steps asked for, with the same settings and input, is not run again:
  it reports its checkpoint ("nothing to do"); predict reports its recorded result;
- with more steps, a stage continues from its last whole checkpoint; in `pipeline`, a later stage whose input
  checkpoint changed is run again from the start, its previous folder kept as `OUT/STAGE.previous-N`;
- fewer steps than done, another setting, or another input to a single stage is refused with one line naming the
  flag and the ways out: a new `--out`, or `--restart` (the previous folder is kept as `OUT/STAGE.previous-N`).

Standard library only, so that a rerun of a finished pipeline answers without importing torch or NeMo.
"""

import ctypes
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from bionemo.example_model.checkpoints import is_checkpoint, last_whole_checkpoint
from bionemo.example_model.errors import ExampleModelError

__all__: Sequence[str] = (
    "LOCK_NAME",
    "Plan",
    "Stage",
    "agreed",
    "check_out_dir",
    "global_rank",
    "interrupted",
    "out_lock",
    "stop_all_ranks_on_ctrl_c",
)

LOCK_NAME = ".bionemo-mnist.lock"
RECORD = Path("record") / "run.json"
UNFINISHED_SUFFIX = "-unfinished"  # nemo's ModelCheckpoint.UNFINISHED_CHECKPOINT_SUFFIX: the marker of a save
UNFINISHED_DIR = "checkpoints-unfinished"


def global_rank() -> int:
    """The rank Lightning's launcher gave this process (0 for the process the user started)."""
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")))


def stop_all_ranks_on_ctrl_c() -> None:
    """
    Make Ctrl-C stop every rank of the run, at once.

    Ctrl-C in a terminal interrupts every process of the run. A rank interrupted while the other waits for it in a
    gloo collective leaves that one blocked until gloo's timeout, minutes later, and Lightning's own handler on rank 0
    (lightning/pytorch/trainer/call.py) tears down, which can wait on the other ranks, before it kills them. So ranks
    > 0 ignore the interrupt and die with rank 0 (Linux `PR_SET_PDEATHSIG`: also when rank 0 is SIGKILLed), and
    rank 0 kills them first, then raises KeyboardInterrupt.
    """
    if global_rank() == 0:
        signal.signal(signal.SIGINT, _kill_ranks_then_interrupt)
        return
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
        if os.getppid() == 1:  # rank 0 was gone before the line above took effect
            os._exit(1)


_INTERRUPTED = False


def interrupted() -> bool:
    """Whether Ctrl-C (SIGINT) reached this process: errors raised after it are its consequence."""
    return _INTERRUPTED


def _kill_ranks_then_interrupt(signum: int, frame: object) -> None:
    global _INTERRUPTED
    _INTERRUPTED = True
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(") ", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == os.getpid():
            try:
                os.kill(int(stat.parent.name), signal.SIGKILL)
            except ProcessLookupError:
                pass
    raise KeyboardInterrupt


def agreed(decide: Callable[[], "Plan"]) -> "Plan":
    """
    `decide()` on rank 0, its plan (or refusal) sent to every rank once they share a process group, so that all ranks
    do the same and rank 0's side effects (folders set aside, the record) are not raced by the others' reads. Before
    the ranks share a group, each decides alone: rank 0 before it starts the others, and a rank > 0 re-running the
    command up to the stage that started it, from what rank 0 already wrote.
    """
    dist = sys.modules.get("torch.distributed")
    if dist is None or not dist.is_initialized() or dist.get_world_size() == 1:
        return decide()
    box: list[Any] = [None]
    if dist.get_rank() == 0:
        try:
            box[0] = decide()
        except ExampleModelError as e:
            box[0] = e
    dist.broadcast_object_list(box, src=0)
    if isinstance(box[0], ExampleModelError):
        raise box[0]
    return box[0]


def check_out_dir(out: Path) -> None:
    """Refuse an --out that is, or lies under, something other than a directory, before anything is written."""
    for path in (out, *out.parents):
        if path.exists():
            if not path.is_dir():
                raise ExampleModelError(f"--out {out}: {path} is not a directory; pass a directory (made if missing)")
            return


@contextmanager
def out_lock(out: Path) -> Iterator[None]:
    """
    Hold `OUT/.bionemo-mnist.lock` for the run (rank 0 only; the other ranks are its children); a second run gets
    one error line naming the holder. A POSIX record lock: the kernel drops it when the process ends in any way,
    SIGKILL included, and processes the run forks (data workers, checkpoint writers) do not inherit it.
    """
    if global_rank() != 0:
        yield
        return
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "a process that wrote no name"
            raise ExampleModelError(
                f"{out} is in use by another bionemo-mnist run ({holder}); wait for it to end, or use another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.ctime()}\n".encode(), 0)
        yield
    finally:
        if created and [p.name for p in out.iterdir()] == [LOCK_NAME]:  # a run refused before it wrote anything
            (out / LOCK_NAME).unlink()
            out.rmdir()
        os.close(fd)


def fingerprint(ckpt: Path) -> str:
    """sha256 of a checkpoint's weights/ files: the same trained weights give the same value wherever they lie."""
    digest = hashlib.sha256()
    for path in sorted(p for p in (ckpt / "weights").rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(ckpt)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def checkpoint_steps(ckpt: Path) -> int:
    """Optimizer steps a checkpoint holds: its name carries the 0-based index of its last step (`step=19` = 20)."""
    found = re.search(r"(?:^|-)step=(\d+)", ckpt.name)
    return int(found.group(1)) + 1 if found else 0


@dataclass(frozen=True)
class Plan:
    """What a stage does now: `train` (fresh or resuming), or nothing, reporting `checkpoint` / `result`."""

    train: bool
    checkpoint: Path | None = None
    result: dict[str, Any] | None = None


@dataclass(frozen=True)
class Stage:
    """
    One stage's folder and what it is built from: `settings` maps each flag that shapes the result to its value,
    `steps` (None for predict) is asked for by `steps_flag`, `input_flag` names where `input_checkpoint` came from
    (None in `pipeline`, where a changed input reruns the stage instead of being refused).
    """

    name: str
    stage_dir: Path
    settings: dict[str, Any]
    steps: int | None = None
    steps_flag: str = "--steps"
    input_checkpoint: Path | None = None
    input_flag: str | None = None

    @property
    def record_path(self) -> Path:  # noqa: D102
        return self.stage_dir / RECORD

    def plan(self, restart: bool = False) -> Plan:
        """
        Decide what this stage does now; on rank 0, folders that must go are set aside (kept). Other ranks get here
        only while rank 0 trains the stage, and decide the same from what rank 0 wrote. `begin` records a start.
        """
        if restart and self.stage_dir.exists():
            self._set_aside("--restart")
        record = self._read_record()
        input_fingerprint = fingerprint(self.input_checkpoint) if self.input_checkpoint else None
        if record is not None and record.get("input_fingerprint") != input_fingerprint:
            if self.input_flag:
                raise self._refusal(f"was built on {record.get('input_checkpoint')}; {self.input_flag} now names "
                                    f"another checkpoint, {self.input_checkpoint}")  # fmt: skip
            self._set_aside(f"its input changed to {self.input_checkpoint}")
            record = None
        if record is not None:
            self._check_settings(record["settings"])
        if self.steps is None:
            return self._plan_predict(record)
        return self._plan_training()

    def begin(self) -> None:
        """Record (rank 0) that the stage starts or resumes, with what it is built from."""
        self._write_record(
            {
                "stage": self.name,
                "status": "running",
                "settings": self.settings,
                "steps": self.steps,
                "input_checkpoint": str(self.input_checkpoint) if self.input_checkpoint else None,
                "input_fingerprint": fingerprint(self.input_checkpoint) if self.input_checkpoint else None,
            }
        )

    def finish(self, checkpoint: Path | None = None, result: dict[str, Any] | None = None) -> None:
        """Record the finished stage (rank 0)."""
        if global_rank() == 0:
            record = {**(self._read_record() or {}), "status": "finished", "result": result}
            record["checkpoint"] = str(checkpoint) if checkpoint else None
            self._write_record(record)

    def _plan_training(self) -> Plan:
        assert self.steps is not None
        note = self._set_aside_unfinished()
        whole = last_whole_checkpoint(self.stage_dir / "checkpoints")
        done = checkpoint_steps(whole) if whole else 0
        if done > self.steps:
            raise self._refusal(f"has already trained {done} steps, more than {self.steps_flag} {self.steps}")
        if whole and done == self.steps:
            self._say(
                f"{self.name}: already trained {done} steps with these settings in {self.stage_dir}; nothing to do"
            )
            return Plan(train=False, checkpoint=whole)
        if note:
            self._say(note)
        elif whole:
            self._say(f"{self.name}: resuming {whole} at step {done} of {self.steps}")
        return Plan(train=True)

    def _plan_predict(self, record: dict | None) -> Plan:
        result = (record or {}).get("result")
        if result and all(Path(result[key]).is_file() for key in ("predictions", "confusion_matrix")):
            self._say(f"{self.name}: already done with this checkpoint and these settings; nothing to do")
            return Plan(train=False, result=result)
        return Plan(train=True)

    def _check_settings(self, recorded: dict[str, Any]) -> None:
        for flag, value in self.settings.items():
            if flag in recorded and recorded[flag] != value:
                raise self._refusal(f"was run with {flag} {recorded[flag]}, this run asks for {flag} {value}")

    def _refusal(self, what: str) -> ExampleModelError:
        return ExampleModelError(
            f"{self.name} in {self.stage_dir} {what}. Run it with its settings to continue it, or start it over: "
            f"with a new --out, or with --restart (which keeps the old run as {self.stage_dir.name}.previous-N)"
        )

    def _set_aside(self, why: str) -> None:
        """Move the stage folder to STAGE.previous-N (rank 0), keeping it whole."""
        if global_rank() != 0 or not self.stage_dir.exists():
            return
        taken = [
            int(p.name.rsplit("-", 1)[1]) for p in self.stage_dir.parent.glob(f"{self.stage_dir.name}.previous-*")
        ]
        dest = self.stage_dir.with_name(f"{self.stage_dir.name}.previous-{max(taken, default=0) + 1}")
        self.stage_dir.rename(dest)
        self._say(f"{self.name}: starting over ({why}); the previous run is kept as {dest}")

    def _set_aside_unfinished(self) -> str | None:
        """
        Move checkpoints whose save was interrupted (NeMo's `-unfinished` marker, or no weights/context) out of
        `checkpoints/` into `checkpoints-unfinished/` (rank 0): NeMo's AutoResume refuses to start beside them, and
        its ModelCheckpoint would delete them. Returns the line that says so and what the run does instead.
        """
        checkpoints = self.stage_dir / "checkpoints"
        if global_rank() != 0 or not checkpoints.is_dir():
            return None
        markers = list(checkpoints.glob(f"*{UNFINISHED_SUFFIX}"))
        marked = {m.with_name(m.name.removesuffix(UNFINISHED_SUFFIX)) for m in markers}
        torn = marked | {p for p in checkpoints.iterdir() if p.is_dir() and not is_checkpoint(p)}
        moving = sorted(p for p in torn | set(markers) if p.exists())
        if not moving:
            return None
        dest = self.stage_dir / UNFINISHED_DIR
        dest.mkdir(exist_ok=True)
        for path in moving:
            shutil.move(path, _free_name(dest / path.name))
        whole = last_whole_checkpoint(checkpoints)
        then = f"resuming from {whole} at step {checkpoint_steps(whole)}" if whole else "starting fresh"
        return f"{self.name}: a checkpoint save was interrupted; set aside {len(moving)} entries in {dest}; {then}"

    def _read_record(self) -> dict | None:
        try:
            return json.loads(self.record_path.read_text())
        except FileNotFoundError:
            return None
        except ValueError as e:
            raise ExampleModelError(
                f"{self.record_path} is not valid JSON ({e}); use a new --out, or --restart to start {self.name} over"
            ) from None

    def _write_record(self, record: dict) -> None:
        if global_rank() != 0:
            return
        self.record_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.record_path.with_name(f".{self.record_path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, self.record_path)

    @staticmethod
    def _say(line: str) -> None:
        if global_rank() == 0:
            print(line, flush=True)


def _free_name(path: Path) -> Path:
    """`path`, or `path.~N` for the first N not taken."""
    n = 0
    while path.exists():
        n += 1
        path = path.with_name(f"{path.name.split('.~')[0]}.~{n}")
    return path
