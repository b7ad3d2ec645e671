"""``gradguard lab list`` and ``gradguard lab NAME [--quick] [--out DIR] [--set KEY=VALUE ...]``."""

from __future__ import annotations

import argparse
import json
from typing import Any

from gradguard.commands._args import THREADS
from gradguard.format import number


def register(sub: Any) -> None:
    p = sub.add_parser(
        "lab",
        help="run a lab experiment that reproduces vanishing/exploding gradients",
        description="Run one lab experiment (see `gradguard lab list`): prints its table and reading; "
        "with --out, writes the table (CSV), figures (PNG), recorded runs (runs.db) and report.html.",
    )
    p.add_argument("name", help="experiment name, or 'list' to list them")
    p.add_argument(
        "--quick", action="store_true", help="the quick preset (seconds) instead of the full one"
    )
    p.add_argument("--out", help="directory to write results to")
    p.add_argument(
        "--set",
        dest="options",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a preset option, value as JSON (e.g. --set steps=50 --set 'depths=[5,10]')",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--framework",
        choices=["torch", "keras"],
        default=None,
        help="depth_sweep only: build the nets in torch (default) or Keras 3 (gradguard[keras])",
    )
    p.add_argument(
        "--threads",
        type=THREADS,
        default=None,
        help="torch CPU threads (default: 1, fastest for the lab's small models)",
    )
    p.set_defaults(func=run)


def parse_options(items: list[str]) -> dict[str, Any]:
    """``["steps=50", "depths=[5, 10]", "act=tanh"]`` -> options (JSON values, else strings)."""
    from gradguard.errors import ConfigError

    options: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}; e.g. --set steps=50")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def check_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """The experiment exists and each ``--set`` value fits its preset's type: a whole number in
    1..100x the full preset's (``steps``, ``width``...), a finite positive number (``lr``), a list
    of such, or a string. Checked before any work, so a typo fails in a second, not minutes in."""
    import importlib

    from gradguard import lab
    from gradguard.errors import ConfigError

    if name not in lab.EXPERIMENTS:
        raise ConfigError(
            f"unknown experiment {name!r}; use one of {sorted(lab.EXPERIMENTS)} "
            "(see `gradguard lab list`)"
        )
    module = importlib.import_module(f"gradguard.lab.{name}")
    quick, full = module.PRESETS["quick"], module.PRESETS["full"]
    extra = getattr(module, "EXTRA_OPTIONS", ())
    for key, value in options.items():
        if key not in quick and key not in extra:
            raise ConfigError(
                f"bad option for experiment {name!r}: {key}; use one of {sorted([*quick, *extra])}"
            )
        if key in quick:
            _check_value(key, value, quick[key], full.get(key, quick[key]))
    return options


def _check_value(key: str, value: Any, quick: Any, full: Any) -> None:
    import math

    from gradguard.errors import ConfigError

    if isinstance(quick, list):
        if not isinstance(value, list) or not value:
            raise ConfigError(f"--set {key}=... must be a non-empty JSON list like {quick}")
        top = max([*quick, *full]) if all(isinstance(v, int) for v in [*quick, *full]) else None
        for v in value:
            _check_value(key, v, quick[0], top if top is not None else full[0])
        return
    if isinstance(quick, (bool, str)):
        return  # the experiment checks its choices
    if isinstance(quick, int):
        high = 100 * max(quick, int(full))
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
            raise ConfigError(
                f"--set {key}={value!r} must be a whole number in 1..{high} (preset: {quick})"
            )
        return
    if isinstance(quick, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"--set {key}={value!r} must be a number (preset: {quick})")
        if not (math.isfinite(value) and value > 0):
            raise ConfigError(f"--set {key}={value!r} must be finite and > 0 (preset: {quick})")


def print_result(console: Any, result: Any, max_rows: int = 40) -> None:
    """Print an experiment's table and reading with rich, fitted to the console.

    Rows: those the experiment marks as key (``result.key["where"]``, e.g. depth_sweep's deepest
    nets), else the first ``max_rows``. Columns: the key ones, else as many as fit the console's
    width, in table order; the caption says what only the report shows.
    """
    from rich.table import Table

    from gradguard.report.terminal import fit_columns

    where = result.key.get("where", {})
    rows = [r for r in result.table if all(r.get(k) == v for k, v in where.items())] or result.table
    rows = rows[:max_rows]
    cells = {c: [_cell(r.get(c)) for r in rows] for c in result.columns}
    columns = [c for c in result.key.get("columns", result.columns) if c in cells]
    # table order: the first columns name the configuration, the last ones go first
    kept = fit_columns(
        [max([len(c)] + [len(x) for x in cells[c]]) for c in columns],
        getattr(console, "width", None),
        drop_order=range(len(columns) - 1, -1, -1),
        keep=[0],
    )
    shown = [c for i, c in enumerate(columns) if i in kept]
    table = Table(title=result.title, title_justify="left")
    for c in shown:
        table.add_column(c, no_wrap=True)
    for k in range(len(rows)):
        table.add_row(*[cells[c][k] for c in shown])
    notes = []
    if len(rows) < len(result.table):
        which = ", ".join(f"{k} = {v}" for k, v in where.items())
        notes.append(f"{len(rows)} of {len(result.table)} rows" + (f" ({which})" if which else ""))
    hidden = [c for c in result.columns if c not in shown]
    if hidden:
        notes.append(f"also in the report: {', '.join(hidden)}")
    if notes:
        table.caption = "; ".join(notes)
    console.print(table)
    console.print(result.reading)


def _cell(v: Any) -> str:
    if isinstance(v, float) or v is None:
        return number(v)
    return str(v)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from gradguard import lab

    console = Console()
    if args.name == "list":
        for name, text in lab.list_experiments():
            console.print(f"[bold]{name}[/bold]  {text}")
        return 0
    options = {"threads": args.threads, **check_options(args.name, parse_options(args.options))}
    if args.framework is not None:
        options["framework"] = args.framework
    if args.out:  # made (or refused) now, not after the experiment's minutes
        from gradguard.lab.output import output_dir

        output_dir(args.out)
    result = lab.run_experiment(
        args.name, quick=args.quick, out=args.out, quiet=args.quiet, **options
    )
    print_result(console, result)
    for label, findings in result.findings.items():
        kinds = ", ".join(sorted({f.kind for f in findings})) or "-"
        console.print(f"  {label}: {kinds}")
    if args.out:
        console.print(f"results written to {args.out}/ (report.html, {result.name}/, runs.db)")
    return 0
