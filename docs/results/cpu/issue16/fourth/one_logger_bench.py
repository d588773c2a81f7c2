"""
NeMo's OneLogger callback's two per-step hooks (configured, disabled on this process), median us per step, before and
after the bridges are installed, in one process: python docs/results/cpu/issue16/fourth/one_logger_bench.py
"""

import logging
import statistics
import time

import bionemo.example_model  # noqa: F401  (first: before lightning/torchvision)
from nemo.lightning.callback_group import CallbackGroup
from nv_one_logger.api.one_logger_provider import OneLoggerProvider

from bionemo.example_model import bridges

callback = CallbackGroup.get_instance().callbacks[0]
provider = OneLoggerProvider.instance()
print(type(callback).__name__, "ready", provider.one_logger_ready, "enabled", provider.one_logger_enabled,
      "loggers", len(logging.root.manager.loggerDict))


def per_step_us(n: int = 2000) -> float:
    times = []
    for step in range(n):
        start = time.perf_counter()
        callback.on_train_batch_start(None, None, None, step)
        callback.on_train_batch_end(None, None, None, None, step)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


print("upstream: start + end hooks, us", round(per_step_us(), 1), round(per_step_us(), 1))
bridges.install("cpu")
print("bridged:  start + end hooks, us", round(per_step_us(), 1), round(per_step_us(), 1))
