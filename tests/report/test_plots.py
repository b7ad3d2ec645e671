"""Figures: log10 heatmap values against numpy, PNG sizes from figure size x dpi, byte-stable PNGs, style."""

from __future__ import annotations

import struct
import zlib
from typing import Any

import matplotlib
import numpy as np
import pytest

from gradguard.report import plots
from gradguard.report._style import DPI
from gradguard.runs.run import Run


def chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    """(type, data) of every PNG chunk, CRCs checked."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    out, i = [], 8
    while i < len(png):
        (n,) = struct.unpack(">I", png[i : i + 4])
        kind, data = png[i + 4 : i + 8], png[i + 8 : i + 8 + n]
        (crc,) = struct.unpack(">I", png[i + 8 + n : i + 12 + n])
        assert zlib.crc32(kind + data) == crc
        out.append((kind, data))
        i += 12 + n
    return out


def size(png: bytes) -> tuple[int, int]:
    kind, data = chunks(png)[0]
    assert kind == b"IHDR"
    return struct.unpack(">II", data[:8])


def test_heatmap_matrix_is_log10_with_blanks_for_bad_values() -> None:
    vals = np.array([[1e-3, 10.0, 0.0], [np.nan, np.inf, -1.0], [2.0, 1e-8, 5e4]])
    run = Run.from_arrays(layers=["a", "b", "c"], metrics={"grad_rms": ([0, 5, 9], vals)})
    steps, logs = plots.heatmap_matrix(run)
    assert steps.tolist() == [0, 5, 9]
    ref = np.full((3, 3), np.nan)
    ok = np.isfinite(vals) & (vals > 0)
    ref[ok] = np.log10(vals[ok])
    np.testing.assert_allclose(logs, ref.T, equal_nan=True)  # (layers, steps)
    assert np.isnan(logs[2, 0]) and np.isnan(logs[1, 1]) and logs[0, 0] == pytest.approx(-3.0)


def test_heatmap_matrix_thins_long_runs_keeping_both_ends() -> None:
    steps = np.arange(0, 3000, 3)
    vals = np.power(10.0, (steps % 7))[:, None] * np.ones((1, 2))
    run = Run.from_arrays(layers=["a", "b"], metrics={"grad_rms": (steps, vals)})
    kept, logs = plots.heatmap_matrix(run, max_cols=50)
    assert len(kept) == 50 and kept[0] == 0 and kept[-1] == steps[-1]
    np.testing.assert_allclose(logs[0], kept % 7)


def test_pick_rows_first_middle_last_with_values() -> None:
    vals = np.array([[np.nan], [1.0], [2.0], [3.0], [np.nan]])
    assert plots._pick_rows(np.arange(5), vals) == [1, 2, 3]
    assert plots._pick_rows(np.arange(2), np.array([[np.nan], [4.0]])) == [1]
    assert plots._pick_rows(np.arange(1), np.array([[np.nan]])) == []


def test_line_and_bar_plots_have_the_requested_size_and_are_byte_stable() -> None:
    series = {
        "tanh": ([1, 2, 4, 8], [1.0, 0.1, 0.01, 0.0]),
        "relu": ([1, 2, 4, 8], [1.0, 1.1, 0.9, 1.0]),
    }
    a = plots.line_plot(
        series,
        title="t",
        xlabel="depth",
        ylabel="ratio",
        logx=True,
        logy=True,
        hline=1.0,
        size=(6.0, 3.0),
    )
    assert size(a) == (6 * DPI, 3 * DPI)
    assert (
        plots.line_plot(
            series,
            title="t",
            xlabel="depth",
            ylabel="ratio",
            logx=True,
            logy=True,
            hline=1.0,
            size=(6.0, 3.0),
        )
        == a
    )
    assert plots.line_plot({"tanh": ([1, 2], [1.0, 2.0])}, size=(6.0, 3.0)) != a
    b = plots.bar_plot(
        ["he", "xavier", "lsuv"], {"tanh": [0.1, 1.0, 1.2], "relu": [1.0, 0.3, 1.1]}, logy=True
    )
    assert size(b) == (7 * DPI, 4 * DPI)
    assert size(plots.bar_plot(["x"], [3.0], size=(2.0, 2.0))) == (2 * DPI, 2 * DPI)


def test_pngs_carry_no_date_or_software_tag() -> None:
    png = plots.bar_plot(["x"], [1.0])
    kinds = [k for k, _ in chunks(png)]
    assert b"tIME" not in kinds
    for k, data in chunks(png):
        if k in (b"tEXt", b"iTXt", b"zTXt"):
            assert not data.startswith(b"Software") and not data.startswith(b"Creation")


def test_figures_leave_global_matplotlib_state_alone() -> None:
    before = dict(matplotlib.rcParams)
    plots.line_plot({"a": ([0, 1], [1.0, 2.0])})
    assert dict(matplotlib.rcParams) == before


def test_run_figures_with_nonfinite_values_render() -> None:
    steps = np.arange(4)
    g = np.array([[1.0, 2.0], [np.nan, np.inf], [0.0, 1e-9], [1e3, 1e4]])
    run = Run.from_arrays(
        layers=["a", "b"],
        metrics={"grad_rms": (steps, g), "act_grad_norm": (steps, g), "act_std": (steps, g)},
        scalars={
            "loss": (steps, [1.0, np.nan, np.inf, 0.5]),
            "grad_norm_total": (steps, [1.0, np.inf, 0.0, 2.0]),
        },
    )
    for png in (
        plots.gradient_flow(run),
        plots.heatmap(run),
        plots.curves(run, []),
        plots.activation_stats(run),
    ):
        assert size(png)[0] > 0


def _captured_figure(monkeypatch: pytest.MonkeyPatch, draw: Any) -> Any:
    """Run ``draw()`` and return the matplotlib Figure it rendered (fig_to_png intercepted)."""
    seen: list[Any] = []
    real = plots.fig_to_png

    def keep(fig: Any) -> bytes:
        seen.append(fig)
        return real(fig)

    monkeypatch.setattr(plots, "fig_to_png", keep)
    draw()
    assert len(seen) == 1
    return seen[0]


def test_curves_mark_findings_at_their_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    from matplotlib.colors import to_hex

    from gradguard.diagnosis.finding import Finding, Severity
    from gradguard.report._style import SEVERITY_COLORS

    steps = np.arange(40)
    run = Run.from_arrays(
        layers=["a", "b"],
        metrics={"grad_rms": (steps, np.ones((40, 2)))},
        scalars={
            "loss": (steps, np.linspace(2.0, 0.5, 40)),
            "grad_norm_total": (steps, np.ones(40)),
        },
    )
    found = [
        Finding("vanishing_gradients", Severity.CRITICAL, ("a",), (5, 20), evidence="tiny"),
        Finding("nonfinite", Severity.WARNING, ("b",), (30, 30), evidence="1 NaN"),
        Finding("healthy", Severity.INFO, steps=(0, 39), evidence="not drawn"),
    ]
    fig = _captured_figure(monkeypatch, lambda: plots.curves(run, found))
    loss_ax, grad_ax = fig.axes[:2]
    crit, warn = SEVERITY_COLORS["critical"], SEVERITY_COLORS["warning"]
    for ax in (loss_ax, grad_ax):  # both panels carry the marks
        vlines = [
            (float(ln.get_xdata()[0]), to_hex(ln.get_color()), ln.get_linestyle())
            for ln in ax.lines
            if len(set(np.asarray(ln.get_xdata(), dtype=float))) == 1 and len(ln.get_xdata()) == 2
        ]
        assert (5.0, crit, "-") in vlines  # the start of the critical range
        assert (30.0, warn, "--") in vlines  # a single-step finding: a dashed line
        spans = [p for p in ax.patches if to_hex(p.get_facecolor()) == crit]
        assert len(spans) == 1
        xs = spans[0].get_transform().transform(spans[0].get_path().vertices)[:, 0]
        lo, hi = ax.transData.inverted().transform([[xs.min(), 0], [xs.max(), 0]])[:, 0]
        assert (lo, hi) == pytest.approx((5.0, 20.0))
        # "healthy" draws nothing: no mark at step 0 or 39 besides the data itself
        assert not any(x in (0.0, 39.0) for x, _, _ in vlines)
    legend = fig.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == ["critical finding", "warning finding"]
    # without findings: no vertical lines, no spans, no legend
    bare = _captured_figure(monkeypatch, lambda: plots.curves(run, []))
    for ax in bare.axes[:2]:
        assert not ax.patches
        assert all(len(set(np.asarray(ln.get_xdata(), dtype=float))) > 1 for ln in ax.lines)
    assert not bare.legends


def test_line_plot_draws_a_band_per_labelled_series(monkeypatch: pytest.MonkeyPatch) -> None:
    from matplotlib.collections import PolyCollection
    from matplotlib.colors import to_hex

    x = [1, 2, 3]
    fig = _captured_figure(
        monkeypatch,
        lambda: plots.line_plot(
            {"a": (x, [1.0, 0.1, 0.01]), "b": (x, [1.0, 1.0, 1.0])},
            logy=True,
            bands={"a": ([0.5, 0.05, 0.0], [2.0, 0.2, 0.02])},
        ),
    )
    ax = fig.axes[0]
    polys = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(polys) == 1  # only "a" has a band, in a's colour
    assert to_hex(polys[0].get_facecolor()[0]) == to_hex(ax.lines[0].get_color())
    ys = np.concatenate([p.vertices[:, 1] for p in polys[0].get_paths()])
    assert ys.max() == pytest.approx(2.0) and ys.min() == pytest.approx(0.05)  # 0 is a gap on log y
