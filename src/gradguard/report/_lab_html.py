"""The lab report: one section per experiment (reading, tidy table, figures, findings per configuration)."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

from gradguard.report._parts import findings_html, table_html
from gradguard.report._template import esc, figure, page
from gradguard.report.experiment import ExperimentResult

__all__ = ["render_lab"]


def _anchor(name: str, used: set[str]) -> str:
    base = "exp-" + (re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "x")
    a, k = base, 2
    while a in used:
        a, k = f"{base}-{k}", k + 1
    used.add(a)
    return a


def _paragraphs(text: str) -> str:
    paras = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    return "".join(f'<p class="lead">{esc(" ".join(p.split()))}</p>' for p in paras)


def _humanise(name: str) -> str:
    return name.replace("_", " ")


def _experiment(r: ExperimentResult, anchor: str, runs_db: str | None) -> str:
    parts = [
        f'<section id="{esc(anchor)}" aria-labelledby="{esc(anchor)}-h">',
        f'<h2 id="{esc(anchor)}-h">{esc(r.title or r.name)}</h2>',
    ]
    meta = [f"experiment {r.name}"]
    if r.elapsed_s:
        meta.append(f"{r.elapsed_s:.1f} s")
    if r.params:
        meta.append(", ".join(f"{k}={v}" for k, v in r.params.items()))
    parts.append(f'<p class="muted">{esc(" · ".join(meta))}</p>')
    if r.reading:
        parts.append("<h3>Reading</h3>" + _paragraphs(r.reading))
    if r.table:
        cols = list(r.columns) or list(r.table[0])
        count = f' <span class="muted">({len(r.table)} rows)</span>' if len(r.table) > 20 else ""
        parts.append(f"<h3>Results{count}</h3>" + table_html(cols, r.table, row_header=cols[0]))
    for fname, png in r.figures.items():
        parts.append(figure(png, f"{r.title or r.name}: {_humanise(fname)}", _humanise(fname)))
    if r.findings:
        parts.append("<h3>Diagnosis per configuration</h3>")
        for label, fs in r.findings.items():
            parts.append(f"<h4>{esc(label)}</h4>")
            parts.append(findings_html(fs, heading="h5", fold_remedies=True))
    if r.runs:
        labels = ", ".join(r.runs)
        if runs_db:
            hint = (
                f"Recorded runs ({labels}) are in {runs_db}; open one with "
                f"gradguard report {runs_db} --name LABEL."
            )
        else:
            hint = f"Recorded runs: {labels}."
        parts.append(f'<p class="muted">{esc(hint)}</p>')
    parts.append("</section>")
    return "\n".join(parts)


def render_lab(
    results: Sequence[ExperimentResult],
    *,
    title: str = "gradguard demo",
    runs_db: str | os.PathLike[str] | None = None,
) -> str:
    """A self-contained HTML page for lab experiments, with a table of contents.

    Args:
        results: :class:`~gradguard.report.experiment.ExperimentResult` objects, in page order.
        title: page title.
        runs_db: the store the experiments recorded their runs in, if any (named in the page).

    Returns:
        The HTML text: one section per experiment with its reading, tidy table, figures and
        findings per configuration.
    """
    db = os.fspath(runs_db) if runs_db is not None else None
    used: set[str] = set()
    anchors = [_anchor(r.name, used) for r in results]
    total = sum(r.elapsed_s for r in results)
    intro_rows = [
        {
            "experiment": r.title or r.name,
            "rows": len(r.table),
            "figures": len(r.figures),
            "seconds": r.elapsed_s,
        }
        for r in results
    ]
    intro = (
        '<section id="overview" aria-labelledby="overview-h">\n<h2 id="overview-h">Overview</h2>\n'
        f'<p class="lead">{len(results)} experiments, {total:.1f} s in all.</p>'
        + table_html(
            ["experiment", "rows", "figures", "seconds"], intro_rows, row_header="experiment"
        )
        + "\n</section>"
    )
    body = "\n".join([intro] + [_experiment(r, a, db) for r, a in zip(results, anchors)])
    toc = [("overview", "Overview")] + [(a, r.title or r.name) for r, a in zip(results, anchors)]
    sub = f"{len(results)} experiments" + (f" · runs in {db}" if db else "")
    return page(title, sub, toc, body)
