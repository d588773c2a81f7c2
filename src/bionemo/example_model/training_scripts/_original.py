"""Shared plumbing of the original example's three scripts: their flags mapped onto `bionemo-mnist`."""

import argparse
import sys
from typing import Sequence

from bionemo.example_model import cli


def run(stage: str, argv: Sequence[str] | None, required: dict[str, str]) -> int:
    """Parse `required` (original flag -> bionemo-mnist flag) plus the usual bionemo-mnist flags, then run `stage`."""
    parser = argparse.ArgumentParser(add_help=False)
    for original in required:
        parser.add_argument(original, required=True)
    known, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    mapped = [arg for original, new in required.items() for arg in (new, getattr(known, original.lstrip("-")))]
    return cli.main([stage, *mapped, *rest])
