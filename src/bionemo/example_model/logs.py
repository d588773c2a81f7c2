"""
Where a `bionemo-mnist` run's messages go.

The terminal gets what a person reads: this package's own lines (progress, checkpoints, the result, and the records of
its `bionemo.example_model` logger) and any ERROR. What NeMo, Megatron, Lightning and Python's warnings say besides
(config dumps, parallel-group listings, the same warning on every import) goes to `OUT/bionemo-mnist.log` only, which
every rank and every run of that OUT appends to; `--verbose` prints it on the terminal too, as before.

Only the CLI routes (`route`); a Python caller of `train.train` keeps the logging it set up, NeMo's included.
"""

import logging
import os
import sys
from pathlib import Path
from typing import Sequence, TextIO

from bionemo.example_model.runs import global_rank

__all__: Sequence[str] = ("LOG_NAME", "adopt_framework_logging", "route", "start_log_file")

LOG_NAME = "bionemo-mnist.log"
PACKAGE_LOGGER = "bionemo.example_model"
_TERMINAL_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"
# Every rank and run of an OUT appends to one file: the pid tells them apart.
_FILE_FORMAT = "%(asctime)s pid %(process)d %(name)s %(module)s:%(lineno)d %(levelname)s %(message)s"

_SPAWNED_NOISE = "ignore::FutureWarning:torch.cuda"

logger = logging.getLogger(PACKAGE_LOGGER)


# Lightning's package loggers: each gets a console handler of its own (and stops propagating) when imported before the
# root logger has a handler; `lightning` always adds one.
_LIGHTNING_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "lightning_fabric", "pytorch_lightning")


class _Terminal(logging.StreamHandler):
    """stderr; when `quiet`, only this package's records and errors."""

    def __init__(self, quiet: bool) -> None:
        super().__init__(sys.stderr)
        self.quiet = quiet

    def filter(self, record: logging.LogRecord) -> bool:
        ours = record.name == PACKAGE_LOGGER or record.name.startswith(PACKAGE_LOGGER + ".")
        return not self.quiet or ours or record.levelno >= logging.ERROR


class _LogFile(logging.FileHandler):
    """
    OUT/bionemo-mnist.log, appended to. Records wait in memory until a stage starts (`start_log_file`), so that a run
    refused before it trains, or one with nothing to do, writes nothing (not even OUT)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, encoding="utf-8", delay=True)
        self.pending: list[logging.LogRecord] | None = []

    def emit(self, record: logging.LogRecord) -> None:
        if self.pending is not None:
            self.pending.append(record)
        else:
            super().emit(record)

    def start(self) -> None:
        pending, self.pending = self.pending or [], None
        for record in pending:
            super().emit(record)

    def _open(self) -> TextIO:
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()


def _lightning_loggers_propagate() -> None:
    for name in _LIGHTNING_LOGGERS:
        lightning_logger = logging.getLogger(name)
        for handler in list(lightning_logger.handlers):
            if type(handler) is logging.StreamHandler:
                lightning_logger.removeHandler(handler)
        lightning_logger.propagate = True


def _routes() -> list[logging.Handler]:
    return [h for h in logging.getLogger().handlers if isinstance(h, (_Terminal, _LogFile))]


def route(out: Path, *, verbose: bool) -> None:
    """
    Send every Python log record and warning of this process to OUT/bionemo-mnist.log, and to the terminal as the
    module says (in place of any earlier `route`). Call early, before torch, NeMo or Lightning is imported;
    `adopt_framework_logging` before a stage imports NeMo's side of the package (NeMo's and Lightning's loggers print
    to the terminal by themselves), and `start_log_file` once the stage's checks have passed.
    """
    root = logging.getLogger()
    for handler in _routes():
        root.removeHandler(handler)
        handler.close()
    for handler, form in ((_Terminal(quiet=not verbose), _TERMINAL_FORMAT), (_LogFile(out / LOG_NAME), _FILE_FORMAT)):
        handler.setFormatter(logging.Formatter(form))
        root.addHandler(handler)
    root.setLevel(logging.INFO)
    _lightning_loggers_propagate()  # where Lightning was imported first
    logging.captureWarnings(True)  # until NeMo's import replaces it with its own capture (see adopt_framework_logging)
    filters = os.environ.get("PYTHONWARNINGS", "")
    if not verbose and _SPAWNED_NOISE not in filters.split(","):
        # Megatron's checkpoint writer spawns a fresh interpreter whose import of torch.cuda prints torch's pynvml
        # deprecation warning, which this process has logged already. Every process this one starts inherits the
        # filter: in the ranks > 0, NeMo's warning capture then drops every FutureWarning (rank 0 logs them).
        os.environ["PYTHONWARNINGS"] = ",".join(filter(None, (filters, _SPAWNED_NOISE)))


def start_log_file() -> None:
    """Write the records so far to OUT/bionemo-mnist.log, and the next ones as they come: a stage is starting."""
    for handler in _routes():
        if isinstance(handler, _LogFile):
            handler.start()


def adopt_framework_logging() -> None:
    """
    Give the framework loggers that print by themselves this run's routes instead. NeMo's logger (it does not
    propagate, prints on rank 0 and takes Python's warnings on import) gets the log file always, and the terminal in
    place of its own printing unless --verbose; the routes also join NeMo's handler set, which each stage's NeMoLogger
    gives Megatron's logger (and stops it propagating). Lightning's loggers lose their console handlers and propagate.
    Imports NeMo; a no-op where `route` did not run.
    """
    routes = _routes()
    if not routes:
        return
    from nemo.utils import logging as nemo_logging  # imports lightning too

    nemo_logger = logging.getLogger("nemo_logger")
    if any(handler in nemo_logger.handlers for handler in routes):
        return  # adopted already (the pipeline's second stage)
    _lightning_loggers_propagate()
    quiet = any(isinstance(h, _Terminal) and h.quiet for h in routes)
    for handler in routes:
        if quiet or isinstance(handler, _LogFile):
            nemo_logger.addHandler(handler)
            # NeMoLogger.setup (nemo.utils.mcore_logger.add_handlers_to_mcore_logger) gives this set to megatron.core
            nemo_logging._handlers[f"bionemo_example_model_{type(handler).__name__}"] = handler
    if quiet:
        nemo_logging.remove_stream_handlers()
        if global_rank() == 0:
            log_file = next(h.baseFilename for h in routes if isinstance(h, _LogFile))
            logger.info("NeMo's, Megatron's and Lightning's messages go to %s (--verbose prints them here)", log_file)
