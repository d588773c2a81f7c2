"""
What an all-reduce over a one-member group costs the host, upstream's `torch.distributed.all_reduce` against the
bridged one (`one_member_all_reduce_returns_at_once`), as Megatron's step makes them: the gradient buffer's sum inside
a coalescing manager, and the gradient norm's sum of one scalar. With --check, first the bridged all-reduce's answers
against upstream's for every op and dtype of tests/unit/bridge_scenarios.py (how the GPU node's NCCL is checked).

    python one_member_bench.py --backend gloo            # repo root, this checkout's src/ first on the path
    python one_member_bench.py --backend nccl --check    # one GPU
"""

import argparse
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed import _coalescing_manager

ROOT = Path(__file__).resolve().parents[5]
sys.path.insert(0, str(ROOT / "tests" / "unit"))

PARAMETERS = 101_651  # the example model's gradient buffer


def per_call_us(call, sync, calls: int = 2000, rounds: int = 5) -> list[float]:
    """Host microseconds per `call`, one figure per round."""
    times = []
    for _ in range(rounds):
        sync()
        start = time.perf_counter()
        for _ in range(calls):
            call()
        sync()
        times.append(round((time.perf_counter() - start) / calls * 1e6, 1))
    return times


def main() -> None:  # noqa: D103
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=["gloo", "nccl"], default="gloo")
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29571")
    device = torch.device("cuda", 0) if args.backend == "nccl" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(args.backend, rank=0, world_size=1)
    from bridge_scenarios import (
        PROCESS_GROUP_ALL_REDUCES,
        assert_one_member_all_reduces_match,
        process_group_all_reduces,
    )
    from torch._C._distributed_c10d import ProcessGroup

    from bionemo.example_model.bridges.all_devices import PATCHES

    upstream = {name: vars(ProcessGroup)[name] for name in PROCESS_GROUP_ALL_REDUCES}
    PATCHES.patches["one_member_all_reduce_returns_at_once"]()  # this bridge alone: no NeMo import, no CPU mode
    bridged = {name: vars(ProcessGroup)[name] for name in PROCESS_GROUP_ALL_REDUCES}
    assert bridged != upstream
    if args.check:
        assert_one_member_all_reduces_match(upstream, device)
        print(f"{args.backend}: the bridged all-reduce gave upstream's answers for every case, group and coalescing")
    group = dist.new_group([0])
    bucket = torch.randn(PARAMETERS, device=device)
    norm = torch.tensor(3.0, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def gradient_sum():  # as start_grad_sync makes it
        with _coalescing_manager(group, async_ops=False):
            dist.all_reduce(bucket, op=dist.ReduceOp.SUM, group=group, async_op=False)

    def norm_sum():  # as get_grad_norm_fp32 makes it
        dist.all_reduce(norm, op=dist.ReduceOp.SUM, group=group)

    for name, methods in (("upstream", upstream), ("bridged", bridged)):
        with process_group_all_reduces(methods):
            print(f"{args.backend} {name}: gradient buffer sum (coalesced) us/call {per_call_us(gradient_sum, sync)}")
            print(f"{args.backend} {name}: gradient norm sum us/call {per_call_us(norm_sum, sync)}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
