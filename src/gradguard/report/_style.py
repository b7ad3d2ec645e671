"""One look for every gradguard figure: palette, matplotlib rc settings, figure factory, PNG bytes.

matplotlib is imported inside the functions (Agg backend, no pyplot), so importing this module is
free and a machine without matplotlib only fails when a figure is asked for.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from gradguard.errors import GradguardError

__all__ = ["PALETTE", "SEVERITY_COLORS", "STEP_COLORS", "rc", "style", "new_figure", "fig_to_png"]

# A colour-blind-safe qualitative palette (Okabe-Ito), in the order series are drawn.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
# Early -> late steps: light to dark blue, so "time" reads without a legend.
STEP_COLORS = ("#9ecae1", "#4292c6", "#08306b")
SEVERITY_COLORS = {"info": "#2b8a3e", "warning": "#e67700", "critical": "#c92a2a"}
DPI = 110


def rc() -> dict[str, Any]:
    """The matplotlib rc settings shared by every figure."""
    from cycler import cycler

    return {
        "figure.facecolor": "white",
        "axes.facecolor": "white",
        "axes.edgecolor": "#444444",
        "axes.grid": True,
        "grid.color": "#e6e6e6",
        "grid.linewidth": 0.8,
        "axes.axisbelow": True,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.titlesize": 11,
        "axes.titleweight": "bold",
        "axes.labelsize": 9.5,
        "axes.prop_cycle": cycler(color=list(PALETTE)),
        "xtick.labelsize": 8.5,
        "ytick.labelsize": 8.5,
        "legend.fontsize": 8.5,
        "legend.frameon": False,
        "lines.linewidth": 1.8,
        "lines.markersize": 4.5,
        "font.family": "DejaVu Sans",
        "svg.hashsalt": "gradguard",
        "savefig.dpi": DPI,
    }


def _matplotlib() -> Any:
    try:
        import matplotlib
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise GradguardError(
            "figures need matplotlib, which is not installed; pip install 'gradguard[report]'"
        ) from e
    return matplotlib


@contextmanager
def style() -> Iterator[None]:
    """Context in which matplotlib uses gradguard's look (rc settings restored afterwards)."""
    mpl = _matplotlib()
    with mpl.rc_context(rc()):
        yield


def new_figure(
    nrows: int = 1, ncols: int = 1, *, size: tuple[float, float] = (8.0, 4.0), **kw: Any
) -> tuple[Any, Any]:
    """A figure and its axes in gradguard's style, not registered with pyplot (no global state).

    Args:
        nrows, ncols: subplot grid.
        size: (width, height) in inches.
        **kw: passed to ``Figure.subplots`` (``sharex=True``, ``squeeze=False``...).

    Returns:
        ``(fig, axes)`` as ``Figure.subplots`` returns them. Call inside :func:`style` for the
        rc settings to apply to text drawn later; :func:`fig_to_png` re-applies them on save.
    """
    _matplotlib()
    from matplotlib.figure import Figure

    with style():
        fig = Figure(figsize=size, layout="constrained")
        axes = fig.subplots(nrows, ncols, **kw)
    return fig, axes


def fig_to_png(fig: Any, *, dpi: int = DPI) -> bytes:
    """PNG bytes of a figure, byte-for-byte stable for the same drawing (no software/date tags).

    >>> fig, ax = new_figure()                    # doctest: +SKIP
    >>> fig_to_png(fig)[:8] == b"\\x89PNG\\r\\n\\x1a\\n"   # doctest: +SKIP
    True
    """
    buf = io.BytesIO()
    with style():
        fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    return buf.getvalue()
