"""
Issue 16, ninth measures: a candidate for megatron-core's no-Apex gradient norm, tried and not kept.

    PYTHONPATH=src python3 docs/results/cpu/issue16/ninth/l2norm_check.py \
        > docs/results/cpu/issue16/ninth/l2norm_check.txt

megatron/core/utils.py `local_multi_tensor_l2_norm` takes each tensor's norm on its device and builds a host tensor
from the list, `torch.tensor(l2)`, which reads them back one at a time (a device sync each on a GPU). The candidate
stacks the same norms (`torch.norm(t)` of a strided tensor is `torch.linalg.vector_norm(t, 2)`), copies them out in
one read, and reduces the same (1, n) float32 host tensor as upstream. This checks it against upstream bit for bit
on the example's 8 gradient shapes at scales 1e-20..1e19 and times both on this CPU, under the CPU bridge's mode as
a CPU run calls them.
"""

import time

import torch

import bionemo.example_model  # noqa: F401  (its import hooks, before megatron is imported below)
from bionemo.example_model.bridges.cpu import cuda_as_cpu

SHAPES = [(64, 784), (64,), (16, 64), (16,), (64, 16), (64,), (784, 64), (784,)]


def candidate(chunk_size, noop_flag, tensor_lists, per_tensor, *args):
    """The candidate, for one list of float32 tensors on one device (megatron's only call)."""
    (tensors,) = tensor_lists
    norms = torch.stack([torch.linalg.vector_norm(t, 2) for t in tensors]).cpu().reshape(1, -1)
    return torch.tensor([float(torch.linalg.vector_norm(norms, 2))], dtype=torch.float, device="cuda"), None


def fastest_and_median_us(fn, tensors, calls=2000):
    """`fn`'s fastest and median call on `tensors`, as text."""
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn(0, None, [tensors], False)
        times.append((time.perf_counter() - start) * 1e6)
    times.sort()
    return f"fastest {times[0]:.1f} median {times[calls // 2]:.1f} us"


if __name__ == "__main__":
    from megatron.core.utils import local_multi_tensor_l2_norm as upstream

    torch.set_num_threads(1)  # as the step benchmark runs
    generator = torch.Generator().manual_seed(0)
    with cuda_as_cpu():
        mismatches = 0
        for _ in range(3000):
            scale = 10.0 ** torch.randint(-20, 20, (1,), generator=generator).item()
            tensors = [torch.randn(shape, generator=generator) * scale for shape in SHAPES]
            ours, theirs = candidate(0, None, [tensors], False)[0], upstream(0, None, [tensors], False)[0]
            mismatches += not torch.equal(ours.view(torch.int32), theirs.view(torch.int32))
        print(f"3000 draws: {mismatches} results differ from upstream's in any bit")
        tensors = [torch.randn(shape) for shape in SHAPES]
        for round_ in (1, 2, 3):
            print(
                f"round {round_}: upstream {fastest_and_median_us(upstream, tensors)}; "
                f"candidate {fastest_and_median_us(candidate, tensors)}"
            )
