"""Online diagnosis: the rules on the run so far, each finding reported once.

The Monitor calls :func:`new_findings` at each flush (``WatchConfig.diagnose_online``); it logs and
warns once per new finding, stores it as an event and calls ``on_finding``.
"""

from __future__ import annotations

import numpy as np

from gradguard.diagnosis._view import RunView
from gradguard.diagnosis.config import DiagnosisConfig
from gradguard.diagnosis.finding import Finding, Severity
from gradguard.store import Run

__all__ = ["new_findings", "ONLINE_RULES"]

# Every rule is a few numpy reductions over the recorded arrays: all of them are cheap enough.
ONLINE_RULES = (
    "nonfinite",
    "exploding_gradients",
    "vanishing_gradients",
    "saturation",
    "dead_units",
    "divergence",
    "stalled_learning",
)


def new_findings(
    run: Run,
    seen: set[tuple[str, tuple[str, ...]]],
    *,
    config: DiagnosisConfig | None = None,
) -> list[Finding]:
    """Findings of severity >= warning on ``run`` whose ``(kind, layers)`` is not in ``seen``.

    Args:
        run: the run so far (``Monitor.run``).
        seen: keys already reported; the keys of the returned findings are added to it.
        config: thresholds (defaults when None).

    Returns:
        The new findings, most severe first.

    >>> seen = set(); new = new_findings(mon.run, seen)   # doctest: +SKIP
    """
    from gradguard.diagnosis.rules import RULES

    config = config or DiagnosisConfig()
    view = RunView(_bounded(run, config.start_steps, config.online_window), config)
    out: list[Finding] = []
    for kind in ONLINE_RULES:
        for f in RULES[kind](view):
            key = (f.kind, tuple(f.layers))
            if f.severity >= Severity.WARNING and key not in seen:
                seen.add(key)
                out.append(f)
    return sorted(out, key=lambda f: -f.severity.rank)


def _bounded(run: Run, head: int, tail: int) -> Run:
    """The run with each series cut to its first ``head`` and last ``tail`` recorded steps."""

    def cut(steps: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if len(steps) <= head + tail:
            return steps, values
        keep = np.r_[np.arange(head), np.arange(len(steps) - tail, len(steps))]
        return steps[keep], values[keep]

    return Run(
        run.name,
        run.layers,
        {m: cut(*run.metric(m)) for m in run.metric_names},
        {s: cut(*run.scalar(s)) for s in run.scalar_names},
        run.events,
        run.config,
    )
