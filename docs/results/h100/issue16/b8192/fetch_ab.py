"""
In-process A/B of one training batch fetch (`MnistResampler.__getitems__` with the consecutive indices Megatron's
sampler gives), this checkout's data path against OLD_TREE's (5afb995), splits on DEVICE, alternating blocks:

    python fetch_ab.py OLD_TREE DEVICE DATA_DIR

Each fetch ends with a device sync, so a time is the fetch's whole cost. Prints per batch size and side the median
and min over all blocks, in microseconds.
"""

import importlib.util
import statistics
import sys
import time

import torch

import bionemo.example_model  # noqa: F401  (first: before torchvision/lightning)
from bionemo.example_model import data as new

old_tree, device, data_dir = sys.argv[1:4]
spec = importlib.util.spec_from_file_location("old_data", f"{old_tree}/src/bionemo/example_model/data.py")
old = importlib.util.module_from_spec(spec)
spec.loader.exec_module(old)
torch.set_num_threads(1)
sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

dm = new.MNISTDataModule(data_dir=data_dir, num_train_samples=8192 * 400, device=device)
dm.setup()
split = dm.splits["train"]
sides = {
    side: mod.MnistResampler(mod.MnistEpochDataset(split), num_samples=8192 * 400, seed=44)
    for side, mod in (("new", new), ("old", old))
}
for batch in (128, 8192):
    times: dict[str, list[float]] = {"new": [], "old": []}
    for block in range(6):
        for side in ("new", "old") if block % 2 else ("old", "new"):
            stream = sides[side]
            for i in range(40):
                start = (block * 40 + i) * batch + 1000  # crosses an epoch boundary now and then, on both sides
                indices = list(range(start, start + batch))
                t = time.perf_counter()
                out = stream.__getitems__(indices)
                sync()
                times[side].append((time.perf_counter() - t) * 1e6)
    a, b = sides["new"].__getitems__(indices), sides["old"].__getitems__(indices)
    assert all(torch.equal(a[k], b[k]) for k in a), "the two data paths disagree"
    for side, ts in times.items():
        print(f"{device} b{batch} {side}: median {statistics.median(ts):.0f} us, min {min(ts):.0f} us ({len(ts)} fetches)")
