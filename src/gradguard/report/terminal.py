"""Terminal rendering of a run (``gradguard show``): layers, gradient flow, scalars, events.

Compute and present stay apart: :func:`layer_rows` and :func:`flow_bars` compute plain values;
:func:`run_summary` turns them into rich renderables.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from gradguard.store import Run

__all__ = ["latest", "layer_rows", "flow_bars", "sparkline", "run_summary", "fmt"]

_BLOCKS = " ▁▂▃▄▅▆▇█"


def fmt(x: float | None) -> str:
    """Compact number: 3 significant digits, scientific outside [1e-3, 1e4), '—' for missing."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if x == 0:
        return "0"
    if 1e-3 <= abs(x) < 1e4:
        return f"{x:.3g}"
    return f"{x:.2e}"


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
    cols = (
        "grad_norm",
        "grad_rms",
        "grad_max",
        "weight_norm",
        "update_ratio",
        "act_std",
        "act_zero_frac",
        "act_sat_frac",
        "act_grad_norm",
    )
    latest_vals = {m: latest(run, m)[1] for m in cols}
    _, nf = run.metric("nonfinite")
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
        for m in cols:
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


def run_summary(run: Run, *, max_events: int = 20) -> Any:
    """A rich renderable summarising a run: header, per-layer table with flow bars, scalars, events."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    steps = run.steps
    env = run.environment
    head = Text.assemble(
        ("run ", "dim"),
        (run.name, "bold"),
        ("  ·  ", "dim"),
        f"{len(run.layers)} layers",
        ("  ·  ", "dim"),
        f"{len(steps)} recorded steps" + (f" ({steps[0]}..{steps[-1]})" if len(steps) else ""),
        ("  ·  ", "dim"),
        f"torch {env.get('torch', '?')} on {env.get('device', '?')}",
        ("  ·  ", "dim"),
        run.created or "",
    )
    rows = layer_rows(run)
    has_agn = any(not math.isnan(r["act_grad_norm"]) for r in rows)
    flow_metric = "grad_rms"
    bars = flow_bars(np.array([r[flow_metric] for r in rows]))
    table = Table(title="layers (forward order), latest values", title_justify="left", expand=False)
    table.add_column("#", justify="right", style="dim")
    table.add_column("layer")
    table.add_column("kind", style="dim")
    table.add_column("grad_norm", justify="right")
    table.add_column("grad_rms", justify="right")
    table.add_column("gradient flow (log grad_rms)", style="cyan", no_wrap=True)
    table.add_column("weight_norm", justify="right")
    table.add_column("update/weight", justify="right")
    if has_agn:
        table.add_column("‖dL/dout‖", justify="right")
    table.add_column("act std", justify="right")
    table.add_column("zero", justify="right")
    table.add_column("sat", justify="right")
    table.add_column("NaN/Inf", justify="right")
    for r, bar in zip(rows, bars):
        kind = r["kind"] + (f"→{r['activation']}" if r["activation"] else "")
        nf = r["nonfinite_steps"]
        cells = [
            str(r["index"]),
            r["name"] if r["trainable"] else f"{r['name']} (frozen)",
            kind,
            fmt(r["grad_norm"]),
            fmt(r["grad_rms"]),
            bar,
            fmt(r["weight_norm"]),
            fmt(r["update_ratio"]),
        ]
        if has_agn:
            cells.append(fmt(r["act_grad_norm"]))
        cells += [
            fmt(r["act_std"]),
            _pct(r["act_zero_frac"]),
            _pct(r["act_sat_frac"]),
            Text(f"{nf} steps", style="bold red") if nf else Text("0", style="dim"),
        ]
        table.add_row(*cells)

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
            fmt(float(v[0])),
            fmt(float(v[-1])),
            fmt(float(finite.min())) if len(finite) else "—",
            fmt(float(finite.max())) if len(finite) else "—",
            sparkline(np.log10(np.abs(v) + 1e-300) if name == "grad_norm_total" else v),
        )
    parts: list[Any] = [head, table, scal]
    if run.events:
        ev = Table(
            title=f"events (last {min(max_events, len(run.events))} of {len(run.events)})",
            title_justify="left",
        )
        ev.add_column("step", justify="right")
        ev.add_column("kind")
        ev.add_column("layer")
        ev.add_column("value", justify="right")
        ev.add_column("message", overflow="fold")
        for e in run.events[-max_events:]:
            first_line = e.message.splitlines()[0] if e.message else ""
            ev.add_row(
                str(e.step) if e.step is not None else "—",
                e.kind,
                e.layer or "",
                fmt(e.value),
                first_line,
            )
        parts.append(ev)
    else:
        parts.append(Text("no events", style="dim"))
    return Group(*parts)


def _pct(x: float) -> str:
    return "—" if math.isnan(x) else f"{100 * x:.0f}%"
