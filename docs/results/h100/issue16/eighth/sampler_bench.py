"""
Issue 16, eighth measures: what NeMo's `MegatronPretrainingSampler` costs per batch on its own (it lists each
batch's indices one `append` at a time), at b128 and b8192, one data-parallel rank. From the repo root, src/ on the
path: `python3 docs/results/h100/issue16/eighth/sampler_bench.py`.
"""

import statistics  # noqa: I001  (this package before NeMo)
import time

import bionemo.example_model  # noqa: F401  (first: its import hooks, before NeMo)
from nemo.lightning.data import MegatronPretrainingSampler

for batch, batches in ((128, 2000), (8192, 200)):
    sampler = MegatronPretrainingSampler(
        total_samples=8192 * 400,
        consumed_samples=0,
        micro_batch_size=batch,
        data_parallel_rank=0,
        data_parallel_size=1,
        drop_last=True,
    )
    batch_indices, times = iter(sampler), []
    for _ in range(batches):
        start = time.perf_counter()
        next(batch_indices)
        times.append(time.perf_counter() - start)
    low, mid = min(times) * 1e3, statistics.median(times) * 1e3
    print(f"b{batch}: min {low:.3f} median {mid:.3f} ms per batch")
