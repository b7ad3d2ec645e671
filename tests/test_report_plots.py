"""Figures: log10 heatmap values against numpy, PNG sizes from figure size x dpi, byte-stable PNGs, style."""

from __future__ import annotations

import struct
import zlib

import matplotlib
import numpy as np
import pytest

from gradguard.report import plots
from gradguard.report._style import DPI
from gradguard.store import Run


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
