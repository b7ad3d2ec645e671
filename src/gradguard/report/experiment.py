"""What every lab experiment hands the report: a tidy table, figures, the runs it recorded, a reading."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gradguard.diagnosis.finding import Finding
from gradguard.runs.run import Run

__all__ = ["ExperimentResult"]


@dataclass
class ExperimentResult:
    """The outcome of one lab experiment.

    Attributes:
        name: experiment id, e.g. ``"depth_sweep"``.
        title: a human title, e.g. ``"Depth x activation x initialisation"``.
        columns: column names of ``table``, in display order.
        table: tidy rows (one dict per configuration / measurement).
        figures: figure name -> PNG bytes (rendered with matplotlib, Agg backend).
        reading: a plain-language reading of the outcome (a few sentences, numbers included).
        runs: runs recorded with the Monitor, if any (label -> Run).
        findings: diagnosis per run label (label -> findings), if diagnosis ran.
        curves: numbers behind the figures that do not fit the tidy table, e.g. depth_sweep's
            per-layer gradient-flow curve of each configuration (label -> name -> list of floats);
            written to ``NAME/curves.json``.
        params: the preset / options it ran with.
        elapsed_s: wall time of the experiment.
        key: what a terminal shows first: ``{"columns": [...], "where": {column: value}}``
            (either may be missing); the report always shows the whole table.
    """

    name: str
    title: str
    columns: list[str]
    table: list[dict[str, Any]]
    figures: dict[str, bytes] = field(default_factory=dict)
    reading: str = ""
    runs: dict[str, Run] = field(default_factory=dict)
    findings: dict[str, list[Finding]] = field(default_factory=dict)
    curves: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    elapsed_s: float = 0.0
    key: dict[str, Any] = field(default_factory=dict)
