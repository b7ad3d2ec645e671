"""``gradguard diagnose RUN.db``: findings with evidence, cause and ranked remedies.

Exit code 0, or 1 when ``--fail-on`` is met (for CI); bad input exits 2 with one line.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from gradguard.commands._args import WIDTH
from gradguard.diagnosis.finding import Severity
from gradguard.errors import ConfigError

_FAIL_ON = ("warning", "critical")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "diagnose",
        help="diagnose a recorded run: vanishing/exploding gradients, NaN, saturation, dead units...",
        description="Run the diagnosis rules on a recorded run and print each finding with its "
        "evidence, cause and ranked remedies. Exit code 1 when --fail-on is met, 2 on bad input.",
    )
    p.add_argument("store", help="the run store (.db) written by gg.watch(store=...)")
    p.add_argument("--name", help="run name (default: the last run in the file)")
    p.add_argument("--json", action="store_true", help="print the findings as a JSON list")
    # no argparse choices=: a bad value is reported like any bad input (one line, exit 2)
    p.add_argument(
        "--fail-on",
        default=None,
        metavar="{warning,critical}",
        help="exit with code 1 if a finding is at least this severe",
    )
    p.add_argument(
        "--width", type=WIDTH, default=None, help="console width (default: the terminal's)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from gradguard.diagnosis import diagnose
    from gradguard.runs.store import load

    if args.fail_on is not None and args.fail_on not in _FAIL_ON:
        raise ConfigError(
            f"--fail-on must be one of {', '.join(_FAIL_ON)}, got {args.fail_on!r}; "
            "e.g. --fail-on warning"
        )
    the_run = load(args.store, args.name)
    findings = diagnose(the_run)
    if args.json:
        print(json.dumps([f.to_dict() for f in findings], indent=2))
    else:
        from rich.console import Console

        console = Console(width=args.width)
        console.print(f"[bold]{the_run.name}[/bold]: {len(findings)} finding(s)")
        for f in findings:
            console.print(f)
    if args.fail_on is not None:
        bar = Severity(args.fail_on)
        if any(f.severity >= bar for f in findings):
            return 1
    return 0
