"""``gradguard report RUN.db``: a self-contained HTML report of a recorded run."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser(
        "report",
        help="write a self-contained HTML report of a recorded run (figures, findings, remedies)",
        description="Diagnose a recorded run and write one self-contained HTML file: summary, "
        "findings with remedies, gradient flow per layer, a layer x step heatmap, loss and "
        "gradient-norm curves, activation statistics and a per-layer table. Open it in any browser.",
    )
    p.add_argument("store", help="the run store (.db) written by gg.watch(store=...)")
    p.add_argument("-o", "--output", help="output file (default: RUN_NAME.html next to the store)")
    p.add_argument("--name", help="run name (default: the last run in the file)")
    p.add_argument("--title", help="page title (default: 'gradguard report: RUN_NAME')")
    p.set_defaults(func=run)


def _default_output(store: str, name: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip(".") or "report"
    return Path(store).resolve().parent / f"{safe}.html"


def run(args: argparse.Namespace) -> int:
    from gradguard.report.html import check_output_path, render_run, write_report
    from gradguard.runs.store import load

    rec = load(args.store, args.name)  # StoreError (a GradguardError) on a missing or foreign file
    # check the output directory before the (seconds-long) rendering
    out = check_output_path(args.output or _default_output(args.store, rec.name))
    path = write_report(out, render_run(rec, title=args.title))
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")
    return 0
