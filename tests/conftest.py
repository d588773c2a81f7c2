"""Shared fixtures. Imports stay light here: the package (imported through support.fixtures) and no torch or NeMo."""

import pytest

from support import drop_stale_megatron_groups, free_port
from support.fixtures import mnist_root  # noqa: F401  (a fixture, offered to every test)


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
