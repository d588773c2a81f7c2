"""
The `one_logger_level_set_once` bridge (bridges.all_devices) leaves nv_one_logger's `get_logger` with upstream's
results. In every state OneLogger can be in (not configured, disabled, enabled, a configuration that raises) and
whatever the logger already holds (a level, a handler), the bridged call returns the same logger, with the same level
and the same handlers, as upstream's; it skips `setLevel` only where upstream would set the level the logger has.
"""

import itertools
import logging
import types

import pytest
from nv_one_logger.api.one_logger_provider import OneLoggerProvider
from nv_one_logger.core.internal import logging as one_logger_logging
from nv_one_logger.core.internal import safe_execution

from bionemo.example_model.bridges import all_devices

CONFIGURED_LEVEL = "INFO"
_names = itertools.count()


class Provider:
    """A stand-in for OneLoggerProvider.instance(): `ready`/`enabled` as given, or a configuration that raises."""

    def __init__(self, ready: bool, enabled: bool, log_dir, config_raises: bool = False) -> None:
        self.one_logger_ready, self._enabled, self._raises = ready, enabled, config_raises
        self._config = types.SimpleNamespace(
            logger_config=types.SimpleNamespace(
                log_level=CONFIGURED_LEVEL,
                log_format="%(message)s",
                log_file_path_for_info=str(log_dir / "info.log"),
                log_file_path_for_err=str(log_dir / "err.log"),
            )
        )

    @property
    def config(self):
        if self._raises:
            raise RuntimeError("configuration unreadable")
        return self._config

    @property
    def one_logger_enabled(self) -> bool:
        return self.one_logger_ready and self._enabled and self.config is not None


PROVIDERS = {  # name: (ready, enabled, the configuration raises)
    "not configured": (False, False, False),
    "disabled": (True, False, False),
    "enabled": (True, True, False),
    "configuration raises": (True, False, True),
}
LOGGER_STATES = {  # name: what the logger holds before the calls
    "fresh": lambda logger: None,
    "the configured level": lambda logger: logger.setLevel(CONFIGURED_LEVEL),
    "another level": lambda logger: logger.setLevel(logging.DEBUG),
    "a handler": lambda logger: logger.addHandler(logging.NullHandler()),
}


def outcome(get_logger, held) -> tuple:
    """Two calls on a new logger that first holds `held`: (same logger each time, its level, its handlers' types)."""
    logger = logging.getLogger(f"test_one_logger_bridge.{next(_names)}")
    held(logger)
    try:
        first, second = get_logger(logger.name), get_logger(logger.name)
        return first is logger and second is logger, logger.level, [type(h).__name__ for h in logger.handlers]
    finally:
        for handler in logger.handlers:
            handler.close()
        logger.handlers.clear()


@pytest.fixture
def bridged_get_logger(monkeypatch):
    """The bridged `get_logger`, installed on this process's nv_one_logger only for the test."""
    monkeypatch.setattr(safe_execution, "get_logger", one_logger_logging.get_logger)
    all_devices.PATCHES.patches["one_logger_level_set_once"]()
    return safe_execution.get_logger


@pytest.mark.parametrize("held", LOGGER_STATES)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_the_bridged_get_logger_leaves_the_logger_as_upstreams_does(
    bridged_get_logger, monkeypatch, tmp_path, provider, held
):
    stand_in = Provider(*PROVIDERS[provider][:2], tmp_path, config_raises=PROVIDERS[provider][2])
    monkeypatch.setattr(OneLoggerProvider, "instance", classmethod(lambda cls: stand_in))
    upstream = outcome(one_logger_logging.get_logger, LOGGER_STATES[held])
    assert outcome(bridged_get_logger, LOGGER_STATES[held]) == upstream


def test_the_bridged_get_logger_of_a_disabled_one_logger_sets_the_level_once(
    bridged_get_logger, monkeypatch, tmp_path
):
    stand_in = Provider(True, False, tmp_path)
    monkeypatch.setattr(OneLoggerProvider, "instance", classmethod(lambda cls: stand_in))
    levels_set, set_level = [], logging.Logger.setLevel

    def recorded(logger: logging.Logger, level) -> None:
        levels_set.append(level)
        set_level(logger, level)

    monkeypatch.setattr(logging.Logger, "setLevel", recorded)
    outcome(bridged_get_logger, LOGGER_STATES["fresh"])
    assert levels_set == [CONFIGURED_LEVEL]
