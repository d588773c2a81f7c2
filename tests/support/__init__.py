"""
Helpers shared by the unit and integration tests, the benchmarks and the scripts they start (importable as `support`:
pytest puts tests/ on sys.path, see pyproject's `pythonpath`; a script adds it itself). Not a test module.
"""

import socket

__all__ = ("STALE_MEGATRON_GROUPS", "drop_stale_megatron_groups", "free_port")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
