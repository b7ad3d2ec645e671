"""Terminal rendering of a run (``gradguard show``): layers, gradient flow, scalars, events.

Compute and present stay apart: :func:`layer_rows` and :func:`flow_bars` compute plain values;
:func:`run_summary` turns them into rich renderables.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from typing import Any

import numpy as np

from gradguard.format import MISSING, number, percent
from gradguard.metrics import (
    ACT_GRAD_NORM,
    ACT_MEAN,
    ACT_SAT_FRAC,
    ACT_STD,
    ACT_ZERO_FRAC,
    GRAD_NORM,
    GRAD_NORM_TOTAL,
    GRAD_RMS,
    LAYER_METRICS,
    NONFINITE,
    UPDATE_RATIO,
    WEIGHT_NORM,
)
from gradguard.runs.run import Run

__all__ = [
    "SHOWN_METRICS",
    "latest",
    "layer_rows",
    "flow_bars",
    "sparkline",
    "run_summary",
    "fit_columns",
]

# per-layer metrics the layer tables show (show, the HTML report), in this order
SHOWN_METRICS = tuple(m for m in LAYER_METRICS if m not in (NONFINITE, ACT_MEAN))

_BLOCKS = " ▁▂▃▄▅▆▇█"


def latest(run: Run, metric: str) -> tuple[int | None, np.ndarray]:
    """The last recorded step of a per-layer metric and its values per layer (NaN where missing).

    A layer missing at the last step (unused, frozen) takes its own last finite value instead.
    """
    steps, values = run.metric(metric)
    n = len(run.layers)
    if len(steps) == 0:
        return None, np.full(n, np.nan)
    out = np.full(n, np.nan)
    for j in range(n):
        col = values[:, j]
        ok = ~np.isnan(col)
        if ok.any():
            out[j] = col[ok][-1]
    return int(steps[-1]), out


def layer_rows(run: Run) -> list[dict[str, Any]]:
    """One dict per layer (forward order) with its latest statistics."""
    latest_vals = {m: latest(run, m)[1] for m in SHOWN_METRICS}
    _, nf = run.metric(NONFINITE)
    nonfinite_total = np.nansum(nf, axis=0) if len(nf) else np.zeros(len(run.layers))
    rows = []
    for j, lay in enumerate(run.layers):
        row: dict[str, Any] = {
            "index": lay.index,
            "name": lay.name,
            "kind": lay.kind,
            "activation": lay.activation,
            "numel": lay.numel,
            "trainable": lay.trainable,
        }
        for m in SHOWN_METRICS:
            row[m] = float(latest_vals[m][j])
        row["nonfinite_steps"] = int(np.count_nonzero(nf[:, j])) if len(nf) else 0
        row["nonfinite_total"] = float(nonfinite_total[j])
        rows.append(row)
    return rows


def flow_bars(values: np.ndarray, width: int = 24) -> list[str]:
    """Bars whose length follows log10(value) between the smallest and largest finite positive value.

    Every positive value gets at least one block, so a layer 1e-9 below the rest still shows.
    """
    v = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(v) & (v > 0)
    bars = []
    if not ok.any():
        return ["" for _ in v]
    logs = np.log10(v[ok])
    lo, hi = float(logs.min()), float(logs.max())
    span = max(hi - lo, 1e-12)
    for x in v:
        if not (np.isfinite(x) and x > 0):
            bars.append("")
            continue
        frac = (math.log10(x) - lo) / span if hi > lo else 1.0
        bars.append("█" * max(1, round(1 + frac * (width - 1))))
    return bars


def sparkline(values: np.ndarray, width: int = 32) -> str:
    """Unicode sparkline of a series (resampled to ``width``), NaN as a gap."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) == 0:
        return ""
    if len(v) > width:
        idx = np.linspace(0, len(v) - 1, width).round().astype(int)
        v = v[idx]
    ok = np.isfinite(v)
    if not ok.any():
        return "·" * len(v)
    lo, hi = float(v[ok].min()), float(v[ok].max())
    out = []
    for x in v:
        if not np.isfinite(x):
            out.append("·")
        else:
            k = 4 if hi == lo else int(round((x - lo) / (hi - lo) * (len(_BLOCKS) - 2))) + 1
            out.append(_BLOCKS[k])
    return "".join(out)


def fit_columns(
    needs: Sequence[int], width: int | None, drop_order: Sequence[int], keep: Collection[int] = ()
) -> set[int]:
    """The columns of a rich table that fit in ``width``.

    Args:
        needs: each column's widest cell (or header), in characters.
        width: the console width; None keeps every column.
        drop_order: column indices, the first to drop first.
        keep: columns never dropped.

    Returns:
        The indices kept: columns are dropped in ``drop_order`` until the table (3 characters of
        padding and rule per column, plus one) fits.

    >>> sorted(fit_columns([10, 10, 10], 30, drop_order=[2, 1, 0], keep=[0]))
    [0, 1]
    """
    shown = set(range(len(needs)))
    if width is None:
        return shown
    for i in drop_order:
        if sum(needs[j] + 3 for j in shown) + 1 <= width:
            break
        if i not in keep:
            shown.discard(i)
    return shown


def run_summary(run: Run, *, max_events: int = 20, width: int | None = None) -> Any:
    """A rich renderable summarising a run: header, per-layer table with flow bars, scalars, events.

    Args:
        width: the console width the layer table must fit in (None: everything, as wide as it
            gets). Columns are dropped least useful first (kind, act std, weight_norm, grad_norm,
            ...) and the flow bar shrinks, rather than squeezing every cell into an ellipsis.
    """
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    steps = run.steps
    env = run.environment
    head_parts: list[Any] = [
        ("run ", "dim"),
        (run.name, "bold"),
        ("  ·  ", "dim"),
        f"{len(run.layers)} layers",
        ("  ·  ", "dim"),
        f"{len(steps)} recorded steps" + (f" ({steps[0]}..{steps[-1]})" if len(steps) else ""),
    ]
    if env.get("torch"):
        head_parts += [("  ·  ", "dim"), f"torch {env['torch']} on {env.get('device', '?')}"]
    if run.created:
        head_parts += [("  ·  ", "dim"), run.created]
    head = Text.assemble(*head_parts)
    rows = layer_rows(run)
    has_agn = any(not math.isnan(r[ACT_GRAD_NORM]) for r in rows)
    bar_width = 24 if width is None or width >= 140 else 12
    bars = flow_bars(np.array([r[GRAD_RMS] for r in rows]), width=bar_width)

    # (keep-priority: lower is kept longer, header, cells, column options), in display order
    columns: list[tuple[int, str, list[Any], dict[str, Any]]] = [
        (0, "#", [str(r["index"]) for r in rows], {"justify": "right", "style": "dim"}),
        (0, "layer", [r["name"] if r["trainable"] else f"{r['name']} (frozen)" for r in rows], {}),
        (
            11,
            "kind",
            [r["kind"] + (f"→{r['activation']}" if r["activation"] else "") for r in rows],
            {"style": "dim"},
        ),
        (8, GRAD_NORM, [number(r[GRAD_NORM]) for r in rows], {"justify": "right"}),
        (1, GRAD_RMS, [number(r[GRAD_RMS]) for r in rows], {"justify": "right"}),
        (
            0,
            "gradient flow (log grad_rms)" if bar_width >= 24 else "flow (log)",
            bars,
            {"style": "cyan", "no_wrap": True},
        ),
        (9, WEIGHT_NORM, [number(r[WEIGHT_NORM]) for r in rows], {"justify": "right"}),
        (3, "update/weight", [number(r[UPDATE_RATIO]) for r in rows], {"justify": "right"}),
    ]
    if has_agn:
        columns.append(
            (2, "‖dL/dout‖", [number(r[ACT_GRAD_NORM]) for r in rows], {"justify": "right"})
        )
    columns += [
        (10, "act std", [number(r[ACT_STD]) for r in rows], {"justify": "right"}),
        (5, "zero", [percent(r[ACT_ZERO_FRAC]) for r in rows], {"justify": "right"}),
        (4, "sat", [percent(r[ACT_SAT_FRAC]) for r in rows], {"justify": "right"}),
        (
            6,
            "NaN/Inf",
            [
                Text(f"{r['nonfinite_steps']} steps", style="bold red")
                if r["nonfinite_steps"]
                else Text("0", style="dim")
                for r in rows
            ],
            {"justify": "right"},
        ),
    ]
    # a header may wrap at its spaces: its first word is what it needs
    needs = [
        max([len(str(x)) for x in cells] + [len(head.split()[0])]) for _, head, cells, _ in columns
    ]
    keep = fit_columns(
        needs,
        width,
        drop_order=sorted(range(len(columns)), key=lambda i: -columns[i][0]),
        keep=[i for i, c in enumerate(columns) if c[0] == 0],
    )
    dropped = [columns[i][1] for i in range(len(columns)) if i not in keep]
    title = "layers (forward order), latest values"
    if dropped:
        title += f"  ·  wider terminal for: {', '.join(dropped)}"
    table = Table(title=title, title_justify="left", expand=False)
    kept = [c for i, c in enumerate(columns) if i in keep]
    for _, header, _, opts in kept:
        table.add_column(header, **opts)
    for k in range(len(rows)):
        table.add_row(*[c[2][k] for c in kept])

    scal = Table(title="scalars", title_justify="left")
    scal.add_column("name")
    scal.add_column("first", justify="right")
    scal.add_column("last", justify="right")
    scal.add_column("min", justify="right")
    scal.add_column("max", justify="right")
    scal.add_column("over steps", no_wrap=True, style="magenta")
    for name in run.scalar_names:
        s, v = run.scalar(name)
        if len(v) == 0:
            continue
        finite = v[np.isfinite(v)]
        scal.add_row(
            name,
            number(float(v[0])),
            number(float(v[-1])),
            number(float(finite.min())) if len(finite) else MISSING,
            number(float(finite.max())) if len(finite) else MISSING,
            sparkline(np.log10(np.abs(v) + 1e-300) if name == GRAD_NORM_TOTAL else v),
        )
    parts: list[Any] = [head, table, scal]
    if run.events:
        ev = Table(
            title=f"events (last {min(max_events, len(run.events))} of {len(run.events)})",
            title_justify="left",
        )
        ev.add_column("step", justify="right")
        ev.add_column("kind", overflow="fold")  # narrow terminals: wrap, never an ellipsis
        ev.add_column("layer", overflow="fold")
        ev.add_column("value", justify="right")
        ev.add_column("message", overflow="fold")
        for e in run.events[-max_events:]:
            first_line = e.message.splitlines()[0] if e.message else ""
            ev.add_row(
                str(e.step) if e.step is not None else MISSING,
                e.kind,
                e.layer or "",
                number(e.value),
                first_line,
            )
        parts.append(ev)
    else:
        parts.append(Text("no events", style="dim"))
    return Group(*parts)
