"""The ``gradguard`` command line.

Each subcommand lives in its own module under :mod:`gradguard.commands` and exposes
``register(subparsers)``; the parser found there sets ``func(args) -> int``. Bad input
(a :class:`~gradguard.errors.GradguardError`) prints one clear line and exits with code 2.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence
from typing import NoReturn

from gradguard import __version__
from gradguard.errors import GradguardError

__all__ = ["main", "build_parser"]


class _Parser(argparse.ArgumentParser):
    """argparse, with its usage errors as one line (like every other bad input): exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}; see {self.prog} --help\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="gradguard",
        description="See, diagnose and fix vanishing and exploding gradients.",
    )
    parser.add_argument("--version", action="version", version=f"gradguard {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    import gradguard.commands as commands

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"gradguard.commands.{info.name}")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except GradguardError as e:
        print(f"gradguard: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gradguard: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
