"""
Running `bionemo-mnist` and the test scripts as subprocesses, each in a session of its own so that every rank
Lightning starts belongs to it: a run that hangs is killed whole, and ranks that outlive rank 0 are reaped.

Every training run of the integration tests is such a subprocess: multi-rank runs must be (Lightning's launcher
re-executes the command line per rank), and one-rank runs are too, so that no NeMo / Megatron global state
(parallel_state, the microbatch calculator, the bridges' patches) leaks between runs or into other tests.
"""

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

RUN_TIMEOUT_S = 480


def bionemo_mnist() -> list[str]:
    """The installed `bionemo-mnist` console script of this interpreter's environment (else `python -m` the CLI)."""
    script = Path(sys.executable).with_name("bionemo-mnist")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "bionemo.example_model.cli"]


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


# Launcher variables: Lightning picks a free port itself, and a stale value from the environment would make concurrent
# runs collide or a one-rank run think it is a rank of another.
LAUNCHER_ENV = ("MASTER_PORT", "MASTER_ADDR", "LOCAL_RANK", "RANK", "WORLD_SIZE", "NODE_RANK")


def _run_env(env: dict[str, str] | None) -> dict[str, str]:
    """This environment, unbuffered, with `env` on top and no launcher variable that `env` does not set itself."""
    inherited = {k: v for k, v in os.environ.items() if k not in LAUNCHER_ENV}
    return {**inherited, "PYTHONUNBUFFERED": "1", **(env or {})}


def run(cmd: list[str], *, env: dict[str, str] | None = None, timeout: float = RUN_TIMEOUT_S, cwd=None) -> Run:
    """
    Run `cmd` in its own session and return its exit code and output. After `timeout` the whole session (every rank
    Lightning started) is killed, so a hung collective cannot outlive the test; ranks still finishing when rank 0
    exits are waited for, then killed, since they belong to this run (they share its session id).
    """
    with tempfile.TemporaryDirectory(prefix="run-") as tmp:
        return start(cmd, Path(tmp) / "stdout", env=env, cwd=cwd).finish(timeout)


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


def describe_session(session_id: int) -> str:
    """One line per live process of the session (pid and command line): which of a run's processes held on."""
    described = []
    for pid in session_members(session_id):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        described.append(f"  {pid}: {cmdline.strip()}")
    return "\n".join(described) or "  (none)"


def _reap_session(session_id: int, grace_s: float = 60.0) -> str:
    """
    Wait for the other processes of session `session_id` (ranks > 0) to exit; kill them after `grace_s`. Returns
    a note naming those it had to kill (empty when none), for the run's output."""
    deadline = time.monotonic() + grace_s
    while session_members(session_id) and time.monotonic() < deadline:
        time.sleep(0.5)
    if not session_members(session_id):
        return ""
    still_running = describe_session(session_id)
    for pid in session_members(session_id):
        os.kill(pid, signal.SIGKILL)
    return f"\n[test harness] killed, still running {grace_s:.0f} s after the first process ended:\n{still_running}"


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
    """
    A run started by `start`, still going: its process (a session leader) and the files its output goes to. Files,
    not pipes: a pipe nobody reads would fill up and stop the run, and a leftover rank holding a pipe would keep its
    reader waiting until the timeout."""

    proc: subprocess.Popen
    stdout: Path
    stderr: Path
    started: float

    def wait_for_output(self, text: str, timeout: float = RUN_TIMEOUT_S) -> None:
        """Block until `text` appears in the run's stdout; fail if the run ends or `timeout` passes first."""
        deadline = time.monotonic() + timeout
        while text not in self.stdout.read_text():
            assert self.proc.poll() is None, f"run ended (exit {self.proc.returncode}) before printing {text!r}"
            assert time.monotonic() < deadline, f"no {text!r} after {timeout} s"
            time.sleep(0.2)

    def finish(self, timeout: float = RUN_TIMEOUT_S) -> Run:
        """Wait for the run to end (killing its whole session after `timeout`) and reap its other ranks."""
        killed = ""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            still_running = describe_session(self.proc.pid)
            killed = f"\n[test harness] killed after {timeout} s; its live processes then:\n{still_running}"
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        seconds = time.monotonic() - self.started
        killed += _reap_session(self.proc.pid)
        cmd, stdout, stderr = list(map(str, self.proc.args)), self.stdout.read_text(), self.stderr.read_text()
        return Run(cmd, self.proc.pid, self.proc.returncode, stdout, stderr + killed, seconds)


def start(cmd: list[str], stdout: Path, *, env: dict[str, str] | None = None, cwd=None) -> Background:
    """Start `cmd` as `run` does (own session, clean launcher variables) but return at once; output goes to the file
    `stdout` and `stdout`.err."""
    stderr = stdout.with_name(stdout.name + ".err")
    with open(stdout, "w") as out, open(stderr, "w") as err:
        proc = subprocess.Popen(
            cmd, env=_run_env(env), cwd=cwd, stdout=out, stderr=err, text=True, start_new_session=True
        )
    return Background(proc, stdout, stderr, time.monotonic())


def run_in_terminal(cmd: list[str], *, env: dict[str, str] | None = None, timeout: float = RUN_TIMEOUT_S) -> Run:
    """
    `run` with stdout on a pseudo-terminal of 120 x 40, as a person's shell gives it (stderr still to a file): `stdout`
    is what the terminal received, carriage returns and all."""
    import fcntl
    import pty
    import struct
    import termios
    import threading

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    received: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every process holding the terminal has closed it
                return
            if not data:
                return
            received.append(data)

    with tempfile.TemporaryDirectory(prefix="tty-") as tmp:
        stderr = Path(tmp) / "stderr"
        with open(stderr, "w") as err:
            proc = subprocess.Popen(
                cmd, env=_run_env(env), stdin=subprocess.DEVNULL, stdout=slave, stderr=err, start_new_session=True
            )
        os.close(slave)
        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        running = Background(proc, stderr, stderr, time.monotonic())  # its stdout is the terminal, read below
        try:
            result = running.finish(timeout)
        finally:
            reader.join(timeout=10)
            if not reader.is_alive():
                os.close(master)
    assert not reader.is_alive(), f"the terminal of {cmd} is still open 10 s after the run ended"
    result.stdout = b"".join(received).decode(errors="replace")
    return result
