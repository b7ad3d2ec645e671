"""Argument types shared by the commands: bounded whole numbers, checked by argparse (one line,
exit 2)."""

from __future__ import annotations

import argparse
from collections.abc import Callable

__all__ = ["whole", "WIDTH", "THREADS", "SEED"]


def whole(low: int, high: int, what: str) -> Callable[[str], int]:
    """An argparse ``type=``: a whole number in ``[low, high]``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number ({what})") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text} is out of range: {what} is {low}..{high}")
        return value

    parse.__name__ = what  # argparse names the type in its message
    return parse


WIDTH = whole(20, 10_000, "console width in characters")
THREADS = whole(1, 1024, "torch CPU threads")
SEED = whole(0, 2**63 - 1, "random seed")
