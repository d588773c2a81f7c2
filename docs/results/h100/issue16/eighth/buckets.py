"""
Disjoint buckets of py-spy raw profiles' training-loop samples (issue 16, eighth measures).

Each sample goes to the first bucket whose frame is on its stack, in this order; the final checkpoint save is left
out. `python3 buckets.py pyspy-*.raw.gz > buckets.txt`.
"""

import collections
import gzip
import re
import sys

ORDER = [
    ("final checkpoint save", "ModelCheckpoint._save_last_checkpoint"),
    ("Lightning log() calls", "LightningModule.log"),
    ("data fetch: the epoch's order (computed once an epoch)", "MnistResampler._epoch_order"),
    ("data fetch: NeMo's sampler listing the batch's indices", "MegatronPretrainingSampler.__iter__"),
    ("data fetch: the rest (the index list to a tensor, the gather)", "_DataFetcher.__next__"),
    ("optimizer: grad norm + clip", "ChainedOptimizer.get_grad_norm"),
    ("optimizer: Adam step", "Adam.step"),
    ("optimizer: rest", "ChainedOptimizer.step"),
    ("forward-backward (graph replay or eager)", "MegatronStep.__call__"),
    ("rest of NeMo training_step", "MegatronStrategy.training_step"),
    ("callbacks (hooks)", "_call_callback_hooks"),
    ("Lightning's logger connector", "_LoggerConnector.on_batch_end"),
]
for path in sys.argv[1:]:
    counts, total = collections.Counter(), 0
    for line in gzip.open(path, "rt"):
        stack, _, n = line.rstrip("\n").rpartition(" ")
        if "_TrainingEpochLoop.advance" not in stack:
            continue
        names = {re.sub(r" \(.*", "", f) for f in stack.split(";")}
        bucket = next((b for b, frame in ORDER if frame in names), "other")
        counts[bucket] += int(n)
    step = sum(v for k, v in counts.items() if k != "final checkpoint save")
    print(f"{path}: {step} step samples (+{counts['final checkpoint save']} in the final save)")
    for bucket, _ in ORDER[1:] + [("other", "")]:
        print(f"  {counts[bucket] / step * 100:5.1f}%  {bucket}")
