"""Reports of runs and lab experiments: terminal (rich), self-contained HTML, matplotlib figures.

Submodules are imported on use: ``gradguard.report.html`` (render_run, render_lab, write_report),
``gradguard.report.plots`` (figures as PNG bytes), ``gradguard.report.terminal``.
"""

from __future__ import annotations

__all__ = ["html", "plots", "terminal"]
