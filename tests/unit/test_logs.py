"""
Specification of `bionemo.example_model.logs`: the terminal gets the package's own lines and errors, the run's log
file gets everything, `--verbose` puts everything on the terminal too, and a run that logs nothing writes no file.

Logging and NeMo's logger are process-wide, so each case runs in a fresh interpreter (`speak`, below): the records a
run of the CLI meets, in the order it meets them (the package's, Lightning's, a warning; NeMo's and Lightning's once
adopted).
"""

import subprocess
import sys
from pathlib import Path

import pytest

from bionemo.example_model.logs import LOG_NAME

SPEAK = """
import logging, sys, warnings
from pathlib import Path
from bionemo.example_model import logs

if sys.argv[3] == "lightning-first":  # as a caller of cli.main that imported Lightning itself
    import lightning.pytorch
logs.route(Path(sys.argv[1]), verbose=sys.argv[2] == "verbose")
logging.getLogger("bionemo.example_model").info("ours: info")
logging.getLogger("lightning.pytorch").info("lightning: info")
logging.getLogger("megatron.core").error("megatron: error")
warnings.warn("python: warning")
logs.adopt_framework_logging()
logs.start_log_file()  # the stage's checks passed
logs.adopt_framework_logging()  # a pipeline's next stage
logs.start_log_file()
from nemo.utils import logging as nemo_logging
from nemo.utils.mcore_logger import add_handlers_to_mcore_logger

nemo_logging.info("nemo: info")
logging.getLogger("lightning.pytorch.accelerators.cuda").info("lightning cuda: info")
warnings.warn("python after nemo: warning")
add_handlers_to_mcore_logger()  # what each stage's NeMoLogger.setup does: megatron.core stops propagating
logging.getLogger("megatron.core.optimizer").info("megatron after setup: info")
logging.getLogger("megatron.core.optimizer").error("megatron after setup: error")
"""


def speak(out: Path, mode: str, order: str = "route-first") -> tuple[str, str]:
    """Run SPEAK; its terminal output (stdout + stderr) and the log file's text ('' where there is none)."""
    proc = subprocess.run(
        [sys.executable, "-c", SPEAK, str(out), mode, order], capture_output=True, text=True, timeout=300, check=True
    )
    log = out / LOG_NAME
    return proc.stdout + proc.stderr, log.read_text() if log.exists() else ""


@pytest.fixture(scope="module")
def quiet(tmp_path_factory) -> tuple[str, str]:
    return speak(tmp_path_factory.mktemp("quiet") / "out", "quiet")


@pytest.fixture(scope="module")
def verbose(tmp_path_factory) -> tuple[str, str]:
    return speak(tmp_path_factory.mktemp("verbose") / "out", "verbose")


EVERY_MESSAGE = (
    "ours: info",
    "lightning: info",
    "megatron: error",
    "python: warning",
    "nemo: info",
    "lightning cuda: info",
    "python after",
    "megatron after setup: info",
    "megatron after setup: error",
)


@pytest.mark.parametrize("message", EVERY_MESSAGE)
def test_the_log_file_keeps_every_message_once_quiet_or_verbose(quiet, verbose, message):
    assert quiet[1].count(message) == 1, quiet[1]
    assert verbose[1].count(message) == 1, verbose[1]


@pytest.mark.parametrize(
    "message", ["lightning: info", "python: warning", "nemo: info", "lightning cuda", "python after"]
)
def test_by_default_the_terminal_does_not_show_framework_chatter(quiet, message):
    assert message not in quiet[0], quiet[0]


@pytest.mark.parametrize("message", ["ours: info", "megatron: error", "megatron after setup: error"])
def test_by_default_the_terminal_shows_the_packages_lines_and_every_error(quiet, message):
    assert quiet[0].count(message) == 1, quiet[0]


def test_by_default_the_terminal_says_once_where_the_framework_messages_went(quiet):
    said = [line for line in quiet[0].splitlines() if "messages go to" in line]
    assert len(said) == 1 and said[0].endswith(f"{LOG_NAME} (--verbose prints them here)"), quiet[0]


@pytest.mark.parametrize("message", EVERY_MESSAGE)
def test_verbose_shows_every_message_on_the_terminal_once(verbose, message):
    assert verbose[0].count(message) == 1, verbose[0]


@pytest.fixture(scope="module")
def lightning_first(tmp_path_factory) -> tuple[str, str]:
    return speak(tmp_path_factory.mktemp("lightning-first") / "out", "quiet", "lightning-first")


@pytest.mark.parametrize("message", ["lightning: info", "lightning cuda: info"])
def test_lightning_imported_before_the_routes_still_goes_to_the_log_file_only(lightning_first, message):
    terminal, log = lightning_first
    assert log.count(message) == 1 and message not in terminal, (terminal, log)


def test_records_before_a_stage_starts_stay_in_memory_so_a_refused_run_writes_nothing(tmp_path):
    code = (
        "import logging, pathlib, bionemo.example_model.logs as l; "
        f"l.route(pathlib.Path({str(tmp_path / 'out')!r}), verbose=False); "
        "logging.getLogger('lightning.pytorch').warning('a warning before a refusal')"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    assert not (tmp_path / "out").exists()
