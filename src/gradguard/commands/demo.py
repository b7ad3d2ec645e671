"""``gradguard demo [--out DIR]``: every lab experiment's quick preset, one report."""

from __future__ import annotations

import argparse
import time
from typing import Any

from gradguard.commands._args import THREADS


def register(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="run every lab experiment (quick presets) and write an HTML report",
        description="Run the quick preset of every lab experiment (about a minute on 2 CPU cores), print "
        "the key tables and findings, and write DIR/report.html, the figures (PNG) and DIR/runs.db.",
    )
    p.add_argument(
        "--out", default="gradguard-demo", help="output directory (default: gradguard-demo/)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars, less output")
    p.add_argument(
        "--threads",
        type=THREADS,
        default=None,
        help="torch CPU threads (default: 1, fastest for the lab's small models)",
    )
    p.set_defaults(func=run)


def run_demo(
    out: str, *, quiet: bool = False, console: Any = None, threads: int | None = None
) -> list[Any]:
    """Run all quick presets, write DIR/report.html, DIR/NAME/*.png and DIR/runs.db.

    Returns:
        The ExperimentResults, in report order.
    """
    from pathlib import Path

    from gradguard import lab
    from gradguard.commands.lab import print_result
    from gradguard.lab.output import RUNS_DB, output_dir, save_runs, write_files, write_lab_report

    root = output_dir(out)
    db = root / RUNS_DB
    for stale in (
        db,
        Path(f"{db}-wal"),
        Path(f"{db}-shm"),
    ):  # a fresh store: one run per configuration
        stale.unlink(missing_ok=True)
    results = []
    for name, _ in lab.list_experiments():
        t = time.perf_counter()
        result = lab.run_experiment(name, quick=True, quiet=quiet, threads=threads)
        results.append(result)
        if console is not None:
            console.rule(f"{name}  ({time.perf_counter() - t:.1f} s)")
            print_result(console, result, max_rows=24)
            for label, findings in result.findings.items():
                if findings:
                    worst = max(findings, key=lambda f: f.severity)
                    console.print(f"  [bold]{label}[/bold]: {worst.severity.value} {worst.kind}")
    for result in results:
        write_files(result, root)
    save_runs(results, db)
    write_lab_report(results, root, title="gradguard demo")
    return results


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console()
    t0 = time.perf_counter()
    run_demo(
        args.out, quiet=args.quiet, console=None if args.quiet else console, threads=args.threads
    )
    console.print(
        f"demo done in {time.perf_counter() - t0:.1f} s: {args.out}/report.html, figures in "
        f"{args.out}/<experiment>/, runs in {args.out}/runs.db"
    )
    return 0
