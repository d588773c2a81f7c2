"""
Issue 16, eighth measures: the epoch order before and after the compacting cycle-walk.

One epoch's order (`_permute_array` over the example's 55,000 training positions, as `MnistResampler._epoch_order`
computes it once an epoch) and one b128 batch's, timed with the sampling.py before the compacting cycle-walk
(ab_before_sampling.py, untracked, at the repo root) and with the tree's, alternating, in one process; checks that
both give the same array. From the repo root, with src/ on the path:
    python3 docs/results/h100/issue16/eighth/epoch_order_bench.py
"""

import importlib.util
import statistics
import time

import numpy as np

from bionemo.example_model import sampling as after

spec = importlib.util.spec_from_file_location("before_sampling", "ab_before_sampling.py")
before = importlib.util.module_from_spec(spec)
spec.loader.exec_module(before)

for n, reps in ((55_000, 30), (128, 500)):
    index = np.arange(n, dtype=np.int64)
    want = before._permute_array(index, 55_000, 1_234_567)
    assert np.array_equal(after._permute_array(index, 55_000, 1_234_567), want)
    for round_ in range(3):
        for name, module in (("before", before), ("after", after)):
            times = []
            for _ in range(reps):
                start = time.perf_counter()
                module._permute_array(index, 55_000, 1_234_567)
                times.append(time.perf_counter() - start)
            low, mid = min(times) * 1e3, statistics.median(times) * 1e3
            print(f"n={n} round {round_} {name}: min {low:.3f} median {mid:.3f} ms")
