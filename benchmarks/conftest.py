"""Fixtures for the benchmarks (run by `nox -s bench`; outside `testpaths`, so `nox -s tests` never collects them)."""

import pytest

import bionemo.example_model  # noqa: F401  (before lightning/torchvision: the package installs its import hooks)
from support.fixtures import mnist_root  # noqa: F401  (a fixture, offered to every benchmark)


@pytest.fixture(scope="session", autouse=True)
def torch_threads():
    """
    Torch intra-op threads for the in-process (loader) benchmarks: $BENCH_TORCH_THREADS, default 1.

    On a busy 2-core machine a 2-thread op waits for its slower thread (a 1024-image gather measured 15-30 ms at 2
    threads); one thread gives steady numbers and is what the step runner uses too.
    """
    import os

    import torch

    torch.set_num_threads(int(os.environ.get("BENCH_TORCH_THREADS", "1")))
    return torch.get_num_threads()
