"""Figures of a run as PNG bytes (matplotlib, Agg, imported lazily), all in one style.

Run figures: :func:`gradient_flow`, :func:`heatmap`, :func:`curves`, :func:`activation_stats`.
Generic helpers the lab reuses: :func:`line_plot`, :func:`bar_plot`, :func:`fig_to_png`,
:func:`new_figure`, :func:`style`.

>>> png = gradient_flow(gg.load("runs/exp.db"))   # doctest: +SKIP
>>> open("flow.png", "wb").write(png)             # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from gradguard.diagnosis.finding import Finding
from gradguard.metrics import (
    ACT_GRAD_NORM,
    ACT_SAT_FRAC,
    ACT_STD,
    ACT_ZERO_FRAC,
    GRAD_NORM_TOTAL,
    GRAD_RMS,
    LOSS,
)
from gradguard.report._style import (
    PALETTE,
    SEVERITY_COLORS,
    STEP_COLORS,
    fig_to_png,
    new_figure,
    style,
)
from gradguard.runs.run import Run

__all__ = [
    "gradient_flow",
    "heatmap",
    "heatmap_matrix",
    "curves",
    "activation_stats",
    "line_plot",
    "bar_plot",
    "fig_to_png",
    "new_figure",
    "style",
    "PALETTE",
]

_MAX_HEATMAP_COLS = (
    600  # more recorded steps than this are thinned (every k-th step) for the heatmap
)


def _positive(v: np.ndarray) -> np.ndarray:
    """Values usable on a log axis: non-finite and non-positive become NaN (a gap)."""
    v = np.array(v, dtype=np.float64)
    v[~np.isfinite(v) | (v <= 0)] = np.nan
    return v


def _spans_decades(v: np.ndarray, decades: float = 1.5) -> bool:
    p = _positive(v)
    ok = p[np.isfinite(p)]
    return ok.size > 1 and bool(np.log10(ok.max() / ok.min()) >= decades)


def _pick_rows(steps: np.ndarray, values: np.ndarray, k: int = 3) -> list[int]:
    """First, middle and last recorded rows that hold at least one finite value."""
    ok = [i for i in range(len(steps)) if np.isfinite(values[i]).any()]
    if not ok:
        return []
    picks = [ok[0], ok[len(ok) // 2], ok[-1]][: max(1, min(k, len(ok)))]
    return list(dict.fromkeys(picks))  # drop repeats, keep order


def _layer_axis(ax: Any, names: Sequence[str]) -> None:
    """Layer depth on the x axis, labelled with layer names when they fit."""
    n = len(names)
    ax.set_xlabel("layer (forward order: input \u2192 output)")
    if n <= 24:
        ax.set_xticks(range(n))
        ax.set_xticklabels(
            [_short(s) for s in names],
            rotation=45 if n > 6 else 0,
            ha="right" if n > 6 else "center",
        )
    ax.set_xlim(-0.5, n - 0.5)


def _short(name: str, width: int = 14) -> str:
    return name if len(name) <= width else "\u2026" + name[-(width - 1) :]


def _no_data(ax: Any, what: str) -> None:
    ax.text(
        0.5,
        0.5,
        f"no {what} recorded",
        ha="center",
        va="center",
        transform=ax.transAxes,
        color="#777777",
    )
    ax.set_xticks([])
    ax.set_yticks([])


def _per_layer_panel(ax: Any, run: Run, metric: str, title: str, ylabel: str) -> None:
    steps, values = run.metric(metric)
    names = run.layer_names
    rows = _pick_rows(steps, values)
    ax.set_title(title)
    if not rows:
        _no_data(ax, metric)
        return
    x = np.arange(len(names))
    colors = STEP_COLORS[-len(rows) :]
    for c, i in zip(colors, rows):
        ax.plot(x, _positive(values[i]), marker="o", color=c, label=f"step {int(steps[i])}")
    if _spans_decades(values[rows]) or metric.startswith("grad") or metric == ACT_GRAD_NORM:
        ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    _layer_axis(ax, names)
    ax.legend(loc="best")


def gradient_flow(run: Run) -> bytes:
    """Per-layer gradient size vs depth at the first, middle and last recorded steps.

    Left: ``grad_rms`` of each layer's parameters; right: ``act_grad_norm`` (the gradient
    reaching each layer's output, dL/dh). Log y: a vanishing gradient is a falling line
    toward the input, an exploding one a rising line.

    Returns:
        PNG bytes.
    """
    with style():
        fig, axes = new_figure(1, 2, size=(10.0, 3.9))
        _per_layer_panel(axes[0], run, GRAD_RMS, "parameter gradient (grad_rms)", "RMS of dL/dW")
        _per_layer_panel(
            axes[1],
            run,
            ACT_GRAD_NORM,
            "backpropagated signal (act_grad_norm)",
            "\u2016dL/dh\u2016",
        )
        return fig_to_png(fig)


def heatmap_matrix(
    run: Run, metric: str = GRAD_RMS, max_cols: int = _MAX_HEATMAP_COLS
) -> tuple[np.ndarray, np.ndarray]:
    """What :func:`heatmap` draws: ``(steps [S'], log10 values [L, S'])``, NaN where blank.

    NaN, Inf and non-positive values become NaN; more than ``max_cols`` recorded steps are
    thinned to ``max_cols`` evenly spaced ones (first and last kept).
    """
    steps, values = run.metric(metric)
    if len(steps) > max_cols:
        keep = np.unique(np.linspace(0, len(steps) - 1, max_cols).round().astype(int))
        steps, values = steps[keep], values[keep]
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.log10(_positive(values)).T  # (layers, steps)
    return steps, logs


def heatmap(run: Run, metric: str = GRAD_RMS) -> bytes:
    """Layer x step heatmap of ``log10(metric)``; NaN, Inf and non-positive values are left blank.

    Args:
        run: the run.
        metric: a per-layer metric name (default ``grad_rms``).

    Returns:
        PNG bytes. Rows are layers (input at the top), columns recorded steps (thinned to at
        most 600 evenly spaced ones on long runs), see :func:`heatmap_matrix`.
    """
    import matplotlib as mpl

    steps, logs = heatmap_matrix(run, metric)
    names = run.layer_names
    height = min(1.6 + 0.22 * max(len(names), 1), 9.0)
    with style():
        fig, ax = new_figure(1, 1, size=(10.0, height))
        blank = bool(len(steps)) and not np.isfinite(logs).all()
        ax.set_title(
            f"log10 {metric} per layer and step" + (" (blank: NaN, Inf or none)" if blank else "")
        )
        if len(steps) == 0 or not np.isfinite(logs).any():
            _no_data(ax, metric)
            return fig_to_png(fig)
        cmap = mpl.colormaps["viridis"].with_extremes(bad="white")
        im = ax.imshow(
            np.ma.masked_invalid(logs),
            aspect="auto",
            cmap=cmap,
            interpolation="nearest",
            origin="upper",
        )
        ax.grid(False)
        cbar = fig.colorbar(im, ax=ax, pad=0.01, fraction=0.04)
        cbar.set_label(f"log10 {metric}")
        n = len(names)
        if n <= 40:
            ax.set_yticks(range(n))
            ax.set_yticklabels([_short(s, 18) for s in names])
        ax.set_ylabel("layer")
        ticks = np.unique(np.linspace(0, len(steps) - 1, min(8, len(steps))).round().astype(int))
        ax.set_xticks(ticks)
        ax.set_xticklabels([str(int(steps[t])) for t in ticks])
        ax.set_xlabel("step")
        return fig_to_png(fig)


def _mark_findings(ax: Any, findings: Sequence[Finding]) -> list[str]:
    """Shade each finding's step range in its severity colour; return the severities drawn."""
    drawn: list[str] = []
    for f in findings:
        if f.steps is None or f.kind == "healthy":
            continue
        a, b = f.steps
        color = SEVERITY_COLORS[f.severity.value]
        if a == b:
            ax.axvline(a, color=color, lw=1.4, ls="--", alpha=0.9)
        else:
            ax.axvspan(a, b, color=color, alpha=0.12, lw=0)
            ax.axvline(a, color=color, lw=1.0, alpha=0.7)
        if f.severity.value not in drawn:
            drawn.append(f.severity.value)
    return drawn


def _series_panel(
    ax: Any, steps: np.ndarray, vals: np.ndarray, name: str, color: str, *, log: bool
) -> None:
    ax.set_ylabel(name)
    if len(steps) == 0:
        _no_data(ax, name)
        return
    v = _positive(vals) if log else np.where(np.isfinite(vals), vals, np.nan)
    few = int(np.isfinite(v).sum()) <= 40  # markers keep a few (or isolated) points visible
    ax.plot(steps, v, color=color, lw=1.6, marker="o" if few else None)
    bad = ~np.isfinite(vals)
    if bad.any():  # non-finite values are data: show where they happened
        ax.plot(
            steps[bad],
            np.full(bad.sum(), np.nanmax(v) if np.isfinite(v).any() else 1.0),
            "x",
            color=SEVERITY_COLORS["critical"],
            ms=7,
            mew=2,
            label="NaN/Inf",
        )
        ax.legend(loc="best")
    if log:
        ax.set_yscale("log")


def curves(run: Run, findings: Sequence[Finding] | None = None) -> bytes:
    """Loss and total gradient norm vs step, the step ranges of findings shaded by severity.

    The loss is drawn on a log axis when it spans more than 1.5 decades; ``grad_norm_total``
    always is. Non-finite values are marked with a red x.

    Returns:
        PNG bytes.
    """
    from matplotlib.patches import Patch

    ls, lv = run.scalar(LOSS)
    gs, gv = run.scalar(GRAD_NORM_TOTAL)
    with style():
        fig, axes = new_figure(2, 1, size=(10.0, 5.0), sharex=True)
        _series_panel(
            axes[0],
            ls,
            lv,
            "loss",
            PALETTE[0],
            log=_spans_decades(lv) and bool(np.nanmin(np.where(np.isfinite(lv), lv, np.nan)) > 0),
        )
        _series_panel(axes[1], gs, gv, GRAD_NORM_TOTAL, PALETTE[3], log=True)
        axes[0].set_title("loss and total gradient norm")
        axes[1].set_xlabel("step")
        drawn: list[str] = []
        for ax in axes:
            drawn = _mark_findings(ax, findings or ())
        if drawn:
            handles = [
                Patch(color=SEVERITY_COLORS[s], alpha=0.35, label=f"{s} finding") for s in drawn
            ]
            fig.legend(handles=handles, loc="outside upper right", ncols=len(handles))
        return fig_to_png(fig)


def activation_stats(run: Run) -> bytes:
    """Activation statistics per layer (first, middle, last detail steps).

    Panels: ``act_std`` (log when it spans decades), ``act_zero_frac`` (dead/zero units) and
    ``act_sat_frac`` (saturated units), the fractions on a 0..1 axis.

    Returns:
        PNG bytes.
    """
    names = run.layer_names
    panels = (
        (ACT_STD, "activation std"),
        (ACT_ZERO_FRAC, "fraction of zeros"),
        (ACT_SAT_FRAC, "fraction saturated"),
    )
    with style():
        fig, axes = new_figure(1, 3, size=(11.0, 3.6))
        for ax, (metric, title) in zip(axes, panels):
            steps, values = run.metric(metric)
            rows = _pick_rows(steps, values)
            ax.set_title(title)
            if not rows:
                _no_data(ax, metric)
                continue
            x = np.arange(len(names))
            for c, i in zip(STEP_COLORS[-len(rows) :], rows):
                ax.plot(
                    x,
                    np.where(np.isfinite(values[i]), values[i], np.nan),
                    marker="o",
                    color=c,
                    label=f"step {int(steps[i])}",
                )
            if metric == ACT_STD:
                if _spans_decades(values[rows]):
                    ax.set_yscale("log")
            else:
                ax.set_ylim(-0.03, 1.03)
            ax.set_ylabel(metric)
            _layer_axis(ax, names)
        if axes[0].get_legend_handles_labels()[0]:
            axes[0].legend(loc="best")
        return fig_to_png(fig)


def line_plot(
    series: Mapping[str, tuple[Sequence[float] | np.ndarray, Sequence[float] | np.ndarray]],
    *,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
    logx: bool = False,
    logy: bool = False,
    hline: float | None = None,
    hline_label: str | None = None,
    bands: Mapping[str, tuple[Sequence[float] | np.ndarray, Sequence[float] | np.ndarray]]
    | None = None,
    size: tuple[float, float] = (7.0, 4.0),
) -> bytes:
    """Lines (one per label) in the house style.

    Args:
        series: label -> (x, y). Non-finite y values become gaps.
        title, xlabel, ylabel: text.
        logx, logy: log axes (non-positive values become gaps on a log axis).
        hline: a dashed reference line at this y (e.g. chi_1 = 1), or None.
        hline_label: the reference line's legend entry, or None.
        bands: label -> (low, high), a shaded band (e.g. the spread over seeds) around that
            label's line, in its colour; same x as the line.
        size: figure size in inches.

    Returns:
        PNG bytes.

    >>> png = line_plot({"tanh": ([1, 2, 3], [1.0, 0.5, 0.25])}, logy=True, ylabel="grad")
    >>> png[:4] == b"\\x89PNG"
    True
    """
    with style():
        fig, ax = new_figure(1, 1, size=size)
        for label, (x, y) in series.items():
            yy = np.asarray(y, dtype=np.float64)
            yy = _positive(yy) if logy else np.where(np.isfinite(yy), yy, np.nan)
            xx = np.asarray(x, dtype=np.float64)
            (line,) = ax.plot(
                xx,
                yy,
                marker="o" if len(yy) <= 30 else None,
                label=str(label),
            )
            if bands and label in bands:
                lo, hi = (np.asarray(b, dtype=np.float64) for b in bands[label])
                lo, hi = (
                    _positive(b) if logy else np.where(np.isfinite(b), b, np.nan) for b in (lo, hi)
                )
                ok = np.isfinite(lo) & np.isfinite(hi)
                ax.fill_between(xx, lo, hi, where=ok, color=line.get_color(), alpha=0.18, lw=0)
        if hline is not None:
            ax.axhline(hline, color="#555555", ls="--", lw=1.0, label=hline_label)
        if logx:
            ax.set_xscale("log")
        if logy:
            ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if len(series) > 1 or (hline is not None and hline_label):
            ax.legend(loc="best")
        return fig_to_png(fig)


def bar_plot(
    labels: Sequence[str],
    values: Mapping[str, Sequence[float] | np.ndarray] | Sequence[float] | np.ndarray,
    *,
    title: str = "",
    ylabel: str = "",
    logy: bool = False,
    size: tuple[float, float] = (7.0, 4.0),
) -> bytes:
    """Bars per label; several series (a mapping name -> values) are grouped side by side.

    Args:
        labels: one per bar group (x axis).
        values: a sequence (one series) or a mapping series name -> values, each ``len(labels)`` long.
        title, ylabel: text.
        logy: log y axis.
        size: figure size in inches.

    Returns:
        PNG bytes.
    """
    groups = dict(values) if isinstance(values, Mapping) else {"": values}
    n = len(labels)
    k = max(len(groups), 1)
    width = 0.8 / k
    with style():
        fig, ax = new_figure(1, 1, size=size)
        x = np.arange(n)
        for i, (name, vals) in enumerate(groups.items()):
            v = np.asarray(vals, dtype=np.float64)
            v = _positive(v) if logy else np.where(np.isfinite(v), v, np.nan)
            ax.bar(x + (i - (k - 1) / 2) * width, v, width=width * 0.95, label=name or None)
        ax.set_xticks(x)
        ax.set_xticklabels(
            [str(s) for s in labels], rotation=30 if n > 6 else 0, ha="right" if n > 6 else "center"
        )
        ax.grid(axis="x", visible=False)
        if logy:
            ax.set_yscale("log")
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        if k > 1:
            ax.legend(loc="best")
        return fig_to_png(fig)
