"""``gradguard show RUN.db``: a run's summary in the terminal."""

from __future__ import annotations

import argparse
from typing import Any

from gradguard.commands._args import WIDTH


def register(sub: Any) -> None:
    p = sub.add_parser(
        "show",
        help="summarise a recorded run: layers, gradient flow, scalars, events",
        description="Summarise a recorded run in the terminal: per-layer latest statistics with a "
        "log-scale gradient-flow bar, scalars with sparklines, and events.",
    )
    p.add_argument("store", help="the run store (.db) written by gg.watch(store=...)")
    p.add_argument("--name", help="run name (default: the last run in the file)")
    p.add_argument("--list", action="store_true", help="list the runs in the file and exit")
    p.add_argument(
        "--width", type=WIDTH, default=None, help="console width (default: the terminal's)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from gradguard.report.terminal import run_summary
    from gradguard.runs.store import list_runs, load

    console = Console(width=args.width)
    if args.list:
        table = Table("name", "created")
        for name, created in list_runs(args.store):
            table.add_row(name, created)
        console.print(table)
        return 0
    console.print(run_summary(load(args.store, args.name), width=console.width))
    return 0
