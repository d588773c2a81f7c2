"""
Inclusive share of each function in a py-spy raw profile's training-loop samples (those under `training_epoch_loop`):
    python pyspy_agg.py PROFILE.raw [N]      # gunzip a .raw.gz first
"""

import collections
import sys

total, inclusive = 0, collections.Counter()
for line in open(sys.argv[1]):
    stack, count = line.rsplit(" ", 1)
    if "training_epoch_loop" not in stack:
        continue
    total += int(count)
    names = set()
    for frame in stack.split(";"):
        function, _, where = frame.partition(" (")
        names.add(f"{function} {where.split(':')[0].split('/')[-1]}")
    for name in names:
        inclusive[name] += int(count)
print("samples", total)
for name, count in inclusive.most_common(int(sys.argv[2]) if len(sys.argv) > 2 else 120):
    print(f"{100 * count / total:5.1f} {name}")
