"""Figures for the lab: the report's shared helpers (gradguard.report.plots), used lazily."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["line_plot", "bar_plot"]


def line_plot(series: Mapping[str, tuple[Any, Any]], **kwargs: Any) -> bytes:
    """Lines, label -> (x, y), as PNG bytes (see gradguard.report.plots.line_plot)."""
    from gradguard.report.plots import line_plot as _line

    return _line(series, **kwargs)


def bar_plot(labels: Sequence[str], values: Any, **kwargs: Any) -> bytes:
    """Grouped bars as PNG bytes (see gradguard.report.plots.bar_plot)."""
    from gradguard.report.plots import bar_plot as _bar

    return _bar(labels, values, **kwargs)
