"""Self-contained HTML reports: one recorded run (:func:`render_run`) or the lab (:func:`render_lab`).

One file, figures embedded as base64 PNG data: URIs, no network, no JavaScript, every text escaped.
The same input gives the same bytes (the PNGs carry no dates; the page prints no clock time).

>>> run = gg.load("runs/exp.db")                       # doctest: +SKIP
>>> write_report("report.html", render_run(run))       # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gradguard.diagnosis import diagnose
from gradguard.diagnosis.finding import Finding
from gradguard.errors import GradguardError
from gradguard.metrics import (
    GRAD_RMS,
)
from gradguard.report._lab_html import render_lab
from gradguard.report._parts import findings_html, severity_counts, table_html
from gradguard.report._template import esc, figure, page
from gradguard.report.terminal import SHOWN_METRICS, layer_rows
from gradguard.runs.run import Run

__all__ = ["render_run", "render_lab", "write_report", "check_output_path", "run_findings"]

_LAYER_COLS = (
    "index",
    "name",
    "kind",
    "numel",
    *SHOWN_METRICS,
    "nonfinite_steps",
)
_LAYER_LABELS = {c: c.replace("_", " ") for c in _LAYER_COLS} | {
    "index": "#",
    "numel": "params",
    "nonfinite_steps": "non-finite steps",
}
_MAX_EVENTS = 200


def run_findings(run: Run) -> list[Finding]:
    """``gradguard.diagnosis.diagnose(run)`` as a list."""
    return list(diagnose(run))


def _summary(run: Run, findings: Sequence[Finding]) -> str:
    steps = run.steps
    rows: list[tuple[str, str]] = [("run", run.name)]
    if run.created:
        rows.append(("recorded", run.created))
    if run.path is not None:
        rows.append(("store", Path(run.path).name))
    n_params = sum(lay.numel for lay in run.layers)
    rows.append(("layers", f"{len(run.layers)} ({n_params:,} parameters)"))
    if len(steps):
        rows.append(("steps recorded", f"{len(steps)} (steps {int(steps[0])}..{int(steps[-1])})"))
    else:
        rows.append(("steps recorded", "none"))
    rows.append(("per-layer metrics", ", ".join(run.metric_names) or "none"))
    rows.append(("scalars", ", ".join(run.scalar_names) or "none"))
    rows.append(("events", str(len(run.events))))
    counts = severity_counts(findings)
    rows.append(("findings", ", ".join(f"{n} {s}" for s, n in counts.items())))
    for key in ("model", "optimizer"):
        if key in run.config:
            rows.append((key, str(run.config[key])))
    watch = run.config.get("watch")
    if isinstance(watch, dict) and watch:
        rows.append(("watch", ", ".join(f"{k}={v}" for k, v in watch.items())))
    env = [f"{k} {v}" for k, v in run.environment.items() if k != "pid"]
    if env:
        rows.append(("environment", " · ".join(env)))
    items = "\n".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in rows)
    return f'<dl class="summary">\n{items}\n</dl>'


def _short(message: str, limit: int = 240) -> str:
    """First line of a message, cut at ``limit`` characters (online findings carry their full text)."""
    line = message.strip().splitlines()[0] if message.strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "\u2026"


def _events(run: Run) -> str:
    if not run.events:
        return '<p class="muted">No events were recorded.</p>'
    shown = run.events[:_MAX_EVENTS]
    rows = [
        {
            "step": e.step,
            "kind": e.kind,
            "layer": e.layer,
            "value": e.value,
            "message": _short(e.message),
        }
        for e in shown
    ]
    more = (
        f'<p class="muted">First {_MAX_EVENTS} of {len(run.events)} events shown.</p>'
        if len(run.events) > _MAX_EVENTS
        else ""
    )
    return table_html(["step", "kind", "layer", "value", "message"], rows, wrap=("message",)) + more


def _layer_table(run: Run) -> list[dict[str, Any]]:
    """Latest statistics per layer; ``kind`` shows the activation that follows (``Linear → Tanh``)."""
    rows = layer_rows(run)
    for r in rows:
        if r.get("activation"):
            r["kind"] = f"{r['kind']} \u2192 {r['activation']}"
    return rows


def _section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{esc(anchor)}" aria-labelledby="{esc(anchor)}-h">\n<h2 id="{esc(anchor)}-h">{esc(title)}</h2>\n{body}\n</section>'


def run_sections(run: Run, findings: Sequence[Finding]) -> list[tuple[str, str, str]]:
    """``(anchor, title, html body)`` of every section of a run's report, in page order."""
    from gradguard.report import plots

    secs: list[tuple[str, str, str]] = [("summary", "Summary", _summary(run, findings))]
    secs.append(("findings", "Findings", findings_html(findings)))
    secs.append(
        (
            "gradient-flow",
            "Gradient flow per layer",
            figure(
                plots.gradient_flow(run),
                "gradient size per layer at the first, middle and last recorded steps",
                "RMS of each layer's parameter gradient (left) and norm of the gradient reaching "
                "each layer's output, dL/dh (right), input to output, log scale. A line falling "
                "toward the input means vanishing gradients; rising, exploding.",
            ),
        )
    )
    secs.append(
        (
            "heatmap",
            "Gradient heatmap",
            figure(
                plots.heatmap(run, GRAD_RMS),
                "heatmap of log10 grad_rms, layers by steps",
                "log10 of each layer's gradient RMS at every recorded step (input layer at the "
                "top). Blank cells: no value, or a non-finite one.",
            ),
        )
    )
    secs.append(
        (
            "curves",
            "Loss and gradient norm",
            figure(
                plots.curves(run, findings),
                "loss and total gradient norm against step, findings shaded",
                "Loss (top) and total gradient norm over all parameters (bottom, log scale). "
                "Shaded: the steps each finding covers, coloured by severity; red x: a non-finite value.",
            ),
        )
    )
    secs.append(
        (
            "activations",
            "Activation statistics",
            figure(
                plots.activation_stats(run),
                "activation std, fraction of zeros and fraction saturated per layer",
                "Per layer: standard deviation of its output, the fraction of exact zeros (dead "
                "ReLUs) and the fraction of saturated units (tanh/sigmoid near their flat tails).",
            ),
        )
    )
    secs.append(
        (
            "layers",
            "Per-layer statistics",
            '<p class="muted">Latest recorded value of each statistic.</p>'
            + table_html(_LAYER_COLS, _layer_table(run), row_header="name", labels=_LAYER_LABELS),
        )
    )
    secs.append(("events", "Events", _events(run)))
    return secs


def render_run(
    run: Run, findings: Sequence[Finding] | None = None, *, title: str | None = None
) -> str:
    """A self-contained HTML page for one recorded run.

    Args:
        run: the run (``gg.load(path)``, ``mon.run``, ``Run.from_arrays(...)``).
        findings: findings to show and mark on the curves; None runs ``gg.diagnose(run)``.
        title: page title (default ``"gradguard report: <run name>"``).

    Returns:
        The HTML text: summary, findings with remedies, gradient flow, heatmap of log10
        grad_rms, loss and gradient-norm curves, activation statistics, per-layer table, events.
    """
    if not isinstance(run, Run):
        raise GradguardError(
            f"render_run() needs a gradguard Run, got {type(run).__name__}; "
            "pass gg.load('runs/x.db') or mon.run"
        )
    found = run_findings(run) if findings is None else list(findings)
    secs = run_sections(run, found)
    body = "\n".join(_section(a, t, b) for a, t, b in secs)
    steps = run.steps
    sub = f"{len(run.layers)} layers, {len(steps)} recorded steps, {len(found)} findings"
    return page(title or f"gradguard report: {run.name}", sub, [(a, t) for a, t, _ in secs], body)


def check_output_path(path: str | os.PathLike[str]) -> Path:
    """The output path, after checking that its directory exists (before any rendering work).

    Raises:
        GradguardError: the directory does not exist.
    """
    p = Path(path)
    parent = p.resolve().parent
    if not parent.is_dir():
        raise GradguardError(
            f"cannot write report {str(p)!r}: directory {str(parent)!r} does not exist; "
            "create it or pass -o elsewhere"
        )
    return p


def write_report(path: str | os.PathLike[str], html: str) -> Path:
    """Write an HTML page (UTF-8) and return its path.

    Raises:
        GradguardError: the directory does not exist or is not writable.
    """
    p = check_output_path(path)
    try:
        p.write_text(html, encoding="utf-8")
    except OSError as e:
        raise GradguardError(f"cannot write report {str(p)!r} ({e}); pass a writable path") from e
    return p
