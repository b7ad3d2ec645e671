"""Writing lab results to disk: tables, readings, figures (PNG), the run store and the HTML report."""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

from gradguard.errors import GradguardError
from gradguard.report.experiment import ExperimentResult

__all__ = ["save_result", "save_runs", "write_files", "write_lab_report", "output_dir", "RUNS_DB"]

RUNS_DB = "runs.db"


def output_dir(out: str | os.PathLike[str]) -> Path:
    path = Path(out)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise GradguardError(
            f"cannot create output directory {str(path)!r} ({e}); pass a writable --out"
        ) from e
    return path


def save_result(
    result: ExperimentResult, out: str | os.PathLike[str], *, report: bool = True
) -> Path:
    """Write one result under ``out``: ``NAME/table.csv``, ``NAME/reading.txt``, ``NAME/FIGURE.png``,
    its runs into ``out/runs.db`` and (``report=True``) ``out/report.html`` with this result alone.

    Running the same experiment again into the same ``out`` replaces its runs: the runs stored
    under its labels (or ``NAME/label``) are deleted first, so every run is stored under its own
    label and ``gradguard report out/runs.db --name LABEL`` opens the latest one.

    Returns:
        The experiment's directory ``out/NAME``.
    """
    from gradguard.runs.store import delete_runs

    root = output_dir(out)
    here = write_files(result, root)
    db = root / RUNS_DB
    delete_runs(db, [n for label in result.runs for n in (label, f"{result.name}/{label}")])
    save_runs([result], db)
    if report:
        write_lab_report([result], root, title=f"gradguard lab: {result.name}")
    return here


def write_files(result: ExperimentResult, root: Path) -> Path:
    """``root/NAME/table.csv``, ``reading.txt``, one PNG per figure and (if the result has
    curves) ``curves.json``; returns ``root/NAME``."""
    here = output_dir(root / result.name)
    with open(here / "table.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=result.columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(result.table)
    (here / "reading.txt").write_text(result.reading + "\n", encoding="utf-8")
    for name, png in result.figures.items():
        (here / f"{name}.png").write_bytes(png)
    if result.curves:
        # NaN (a layer without a positive gradient) is written as null: strict JSON
        clean = {
            label: {k: [v if math.isfinite(v) else None for v in vals] for k, vals in c.items()}
            for label, c in result.curves.items()
        }
        (here / "curves.json").write_text(json.dumps(clean) + "\n", encoding="utf-8")
    return here


def save_runs(results: Sequence[ExperimentResult], path: str | os.PathLike[str]) -> Path:
    """Append every recorded run of ``results`` to the store at ``path``, one named run each.

    A run is stored under its label (e.g. ``"relu/he/depth20"``); a label already used in this
    call is prefixed with its experiment's name.
    """
    from gradguard.record.batch import Batch
    from gradguard.runs.store import Store

    store = Store(path)
    try:
        taken = {name for _, name, _ in store.runs()}
        for result in results:
            for label, run in result.runs.items():
                name = label if label not in taken else f"{result.name}/{label}"
                taken.add(name)
                config = {**run.config, "experiment": result.name, "label": label}
                run_id, _ = store.create_run(name, config, run.environment)
                batch = Batch(
                    metrics={m: run.metric(m) for m in run.metric_names},
                    scalars={s: run.scalar(s) for s in run.scalar_names},
                    events=list(run.events),
                    layers=list(run.layers),
                )
                store.write(run_id, batch)
    finally:
        store.close()
    return Path(path)


def write_lab_report(
    results: Sequence[ExperimentResult],
    out: str | os.PathLike[str],
    *,
    title: str = "gradguard demo",
) -> Path:
    """Write ``out/report.html`` for ``results`` (gradguard.report.html.render_lab)."""
    from gradguard.report.html import render_lab, write_report

    root = output_dir(out)
    html = render_lab(results, title=title, runs_db=RUNS_DB)
    return write_report(root / "report.html", html)
