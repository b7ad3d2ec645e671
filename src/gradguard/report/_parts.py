"""HTML fragments shared by the run and lab reports: findings, tables, numbers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gradguard.diagnosis.finding import Finding, Severity
from gradguard.format import MISSING, number
from gradguard.report._template import esc

__all__ = ["cell", "finding_html", "findings_html", "table_html", "severity_counts"]

_LONG = 20  # tables with more rows scroll inside a box (sticky header) instead of filling pages


def cell(x: Any) -> tuple[str, bool]:
    """``(escaped text, is_number)`` of a table value: floats to 3 significant digits, '—' for missing."""
    if x is None:
        return MISSING, False
    if isinstance(x, bool):
        return ("yes" if x else "no"), False
    if isinstance(x, int) or (hasattr(x, "dtype") and getattr(x.dtype, "kind", "") in "iu"):
        return esc(int(x)), True
    if isinstance(x, float) or (hasattr(x, "dtype") and getattr(x.dtype, "kind", "") == "f"):
        return esc(number(float(x))), True
    return esc(x), False


def table_html(
    columns: Sequence[str],
    rows: Sequence[Mapping[str, Any]],
    *,
    caption: str | None = None,
    row_header: str | None = None,
    labels: Mapping[str, str] | None = None,
    wrap: Sequence[str] = (),
) -> str:
    """A ``<table>`` with ``<thead>``/``<th scope>``; numbers right-aligned.

    Args:
        columns: keys of ``rows`` to show, in order.
        rows: one mapping per row; a missing key shows '—'.
        caption: optional ``<caption>``.
        row_header: the column whose cells are row headers (``<th scope="row">``).
        labels: column key -> header text (default: the key).
        wrap: columns of long text whose cells wrap (others stay on one line).
    """
    labels = labels or {}
    numeric = {
        c: any(cell(r.get(c))[1] for r in rows)
        and all(cell(r.get(c))[1] or r.get(c) is None for r in rows)
        for c in columns
    }
    num = ' class="num"'
    head = "".join(
        f'<th scope="col"{num if numeric[c] else ""}>{esc(labels.get(c, c))}</th>' for c in columns
    )
    body = []
    for r in rows:
        tds = []
        for c in columns:
            text, _ = cell(r.get(c))
            cls = ' class="num"' if numeric[c] else (' class="wrap"' if c in wrap else "")
            tag = "th" if c == row_header else "td"
            scope = ' scope="row"' if c == row_header else ""
            tds.append(f"<{tag}{scope}{cls}>{text}</{tag}>")
        body.append("<tr>" + "".join(tds) + "</tr>")
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    return (
        f'<div class="table-wrap{" long" if len(rows) > _LONG else ""}"><table>{cap}<thead><tr>{head}</tr></thead>'
        f"\n<tbody>\n{chr(10).join(body)}\n</tbody></table></div>"
    )


def finding_html(f: Finding, *, heading: str = "h3", fold_remedies: bool = False) -> str:
    """One finding as an ``<article>``: severity badge, where, evidence, cause, ranked remedies."""
    sev = f.severity.value
    parts = [
        f'<article class="finding sev-{sev}">',
        f'<{heading}><span class="badge">{esc(sev.upper())}</span>{esc(f.title)}</{heading}>',
    ]
    where = f.where(6)
    if where:
        parts.append(f'<p class="muted">{esc(where)}</p>')
    if f.evidence:
        parts.append(f"<p><strong>Evidence.</strong> {esc(f.evidence)}</p>")
    if f.cause:
        parts.append(f"<p><strong>Cause.</strong> {esc(f.cause)}</p>")
    if f.remedies:
        items = "\n".join(
            f"<li><strong>{esc(r.name)}</strong> — {esc(r.why)}<br><code>{esc(r.how)}</code></li>"
            for r in f.remedies
        )
        ol = f"<ol>\n{items}\n</ol>"
        if fold_remedies:
            parts.append(
                f"<details><summary>{len(f.remedies)} remedies, best first</summary>{ol}</details>"
            )
        else:
            parts.append(f"<p><strong>Remedies</strong>, best first:</p>{ol}")
    parts.append("</article>")
    return "\n".join(parts)


def severity_counts(findings: Sequence[Finding]) -> dict[str, int]:
    """Number of findings per severity, critical first."""
    return {
        s.value: sum(1 for f in findings if f.severity == s) for s in sorted(Severity, reverse=True)
    }


def findings_html(
    findings: Sequence[Finding], *, heading: str = "h3", fold_remedies: bool = False
) -> str:
    """Every finding (the caller's order), or a sentence saying there are none."""
    if not findings:
        return '<p class="muted">No findings.</p>'
    return "\n".join(
        finding_html(f, heading=heading, fold_remedies=fold_remedies) for f in findings
    )
