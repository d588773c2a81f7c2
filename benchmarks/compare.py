"""
Compare two benchmark summaries (summarize.py's latest.json): print a table, exit 1 on a >10% regression.

    python benchmarks/compare.py BASELINE LATEST [--tolerance 0.10]

Direction-aware: a speedup/fraction (higher is better) fails when it drops below baseline x (1 - tolerance); a
ratio against a reference (lower is better) fails when it rises above baseline x (1 + tolerance). A ratio missing
(null) on either side is reported and skipped. Exit codes: 0 ok, 1 regression, 2 bad input.

A baseline may name its own tolerance for a ratio (`"tolerances": {ratio: fraction}`, with the spread of repeated
runs that justifies it in `"tolerances_measured"`): on a shared machine some ratios move by more than 10% between runs
of the same code, and a check that fails on noise is a check nobody reads. A tolerance the baseline names wins over
--tolerance, which sets the others'. A name that is no ratio, or a tolerance that could never fail (a fraction of 1
or more for a higher-is-better ratio), is bad input.
"""

import argparse
import json
import sys
from pathlib import Path

from ratios import RATIOS

# +1: higher is better; -1: lower is better.
DIRECTIONS = {r.name: +1 if r.higher_is_better else -1 for r in RATIOS}


def compare(baseline: dict, latest: dict, tolerance: float) -> tuple[list[tuple], bool]:
    """One row per ratio, (name, baseline, latest, change, allowed, status), and whether any regressed."""
    named = baseline.get("tolerances", {})
    if unknown := sorted(set(named) - set(DIRECTIONS)):
        raise ValueError(f"the baseline names tolerances for {unknown}, which are not ratios: fix their names")
    if never := sorted(k for k, t in named.items() if DIRECTIONS[k] > 0 and t >= 1):
        raise ValueError(f"the baseline's tolerances for {never} are 100% or more and can never fail: lower them")
    rows, failed = [], False
    for key, direction in DIRECTIONS.items():
        base, new = baseline.get("ratios", {}).get(key), latest.get("ratios", {}).get(key)
        allowed = named.get(key, tolerance)
        if base is None or new is None:
            rows.append((key, base, new, None, allowed, "skipped (not measured)"))
            continue
        change = new / base - 1 if base else float("inf")
        worse = change < -allowed if direction > 0 else change > allowed
        failed |= worse
        rows.append((key, base, new, change, allowed, "REGRESSION" if worse else "ok"))
    return rows, failed


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("baseline", type=Path)
    parser.add_argument("latest", type=Path)
    parser.add_argument("--tolerance", type=float, default=0.10)
    args = parser.parse_args(argv)
    try:
        baseline, latest = json.loads(args.baseline.read_text()), json.loads(args.latest.read_text())
    except (OSError, json.JSONDecodeError) as e:
        print(f"cannot read summaries: {e}", file=sys.stderr)
        return 2
    if baseline.get("machine_class") != latest.get("machine_class"):
        print(
            f"warning: machine class differs: baseline {baseline.get('machine_class')!r}, "
            f"latest {latest.get('machine_class')!r}",
            file=sys.stderr,
        )
    if baseline.get("step_ratio_stat") != latest.get("step_ratio_stat"):
        print(
            f"warning: step ratios use {baseline.get('step_ratio_stat')!r} in the baseline, "
            f"{latest.get('step_ratio_stat')!r} in latest",
            file=sys.stderr,
        )
    try:
        rows, failed = compare(baseline, latest, args.tolerance)
    except ValueError as e:
        print(f"bad baseline {args.baseline}: {e}", file=sys.stderr)
        return 2
    header = ("ratio", "better", "baseline", "latest", "change", "tolerance", "status")
    table = [header] + [
        (
            k,
            "higher" if DIRECTIONS[k] > 0 else "lower",
            _fmt(b),
            _fmt(n),
            "-" if c is None else f"{c:+.1%}",
            f"{a:.0%}",
            s,
        )
        for k, b, n, c, a, s in rows
    ]
    widths = [max(len(str(r[i])) for r in table) for i in range(len(header))]
    for r in table:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))
    print(f"\n{'FAIL' if failed else 'OK'}: tolerance {args.tolerance:.0%} unless the baseline names one")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
