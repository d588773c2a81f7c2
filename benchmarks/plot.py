"""
Plot the tracked ratios over time from benchmarks/results/history.jsonl to history.png (matplotlib, Agg), one line
per machine class: a CPU ratio and an H100 ratio are different series, never joined.

    python benchmarks/plot.py [--history benchmarks/results/history.jsonl] [--out benchmarks/results/history.png]
"""

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ratios import RATIOS  # noqa: E402

HERE = Path(__file__).parent
SERIES = [(r.name, f"{r.label}, {'higher' if r.higher_is_better else 'lower'} better", r.target) for r in RATIOS]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--history", type=Path, default=HERE / "results" / "history.jsonl")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "history.png")
    args = parser.parse_args()
    runs = [json.loads(line) for line in args.history.read_text().splitlines() if line.strip()]
    fig, axes = plt.subplots(len(SERIES), 1, figsize=(9, 2.3 * len(SERIES)), sharex=True)
    x = list(range(len(runs)))
    labels = [f"{r.get('timestamp', '')[:16]}\n{r.get('git') or ''}\n{r.get('machine_class', '')}" for r in runs]
    for ax, (key, title, target) in zip(axes, SERIES):
        for machine in sorted({r.get("machine_class", "?") for r in runs}):
            pts = [
                (i, r["ratios"][key])
                for i, r in zip(x, runs)
                if r.get("machine_class", "?") == machine and r.get("ratios", {}).get(key) is not None
            ]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=machine)
        if target is not None:
            ax.axhline(target, color="tab:red", linestyle="--", linewidth=1, label=f"target {target}")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="best", fontsize=7)
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    axes[-1].set_xticks(x, labels, fontsize=6)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=100)
    print(f"wrote {args.out} ({len(runs)} runs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
