"""Online diagnosis: the rules on the run so far, each problem reported once (again if it worsens).

The Monitor calls :func:`new_findings` at each flush (``WatchConfig.diagnose_online``); it logs and
warns once per new finding, stores it as an event and calls ``on_finding``.

What counts as "the same problem" is the finding's :func:`key`: its kind, and whether it is about
layers or about the whole run (``exploding_gradients`` over depth names layers, over time it
does not: two problems). The layers themselves are not part of the key: saturation that spreads
from 5 to 6 to 7 layers is reported once, not three times. A problem is reported again only
when its severity rises (warning -> critical).
"""

from __future__ import annotations

import numpy as np

from gradguard.diagnosis.config import DiagnosisConfig
from gradguard.diagnosis.finding import Finding, Severity
from gradguard.diagnosis.view import RunView
from gradguard.runs.store import Run

__all__ = ["new_findings", "key", "ONLINE_RULES"]

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


def key(f: Finding) -> tuple[str, str]:
    """What identifies a problem across flushes: ``(kind, "layers" | "run")``."""
    return (f.kind, "layers" if f.layers else "run")


def new_findings(
    run: Run,
    seen: dict[tuple[str, str], Severity],
    *,
    config: DiagnosisConfig | None = None,
) -> list[Finding]:
    """Findings of severity >= warning on ``run`` not reported before at that severity.

    A finding is new when its :func:`key` is not in ``seen``, or when its severity is above the
    one recorded there (an escalation). When one evaluation gives several findings with the same
    key, only the most severe is returned.

    Args:
        run: the run so far (``Monitor.run``, or the bounded tail the Monitor builds).
        seen: the most severe level reported so far per key; updated with the returned findings.
        config: thresholds (defaults when None).

    Returns:
        The new findings, most severe first.

    >>> seen = {}; new = new_findings(mon.run, seen)   # doctest: +SKIP
    """
    from gradguard.diagnosis.rules import RULES

    config = config or DiagnosisConfig()
    view = RunView(_bounded(run, config.start_steps, config.online_window), config)
    found = [
        f for kind in ONLINE_RULES for f in RULES[kind](view) if f.severity >= Severity.WARNING
    ]
    out: list[Finding] = []
    for f in sorted(found, key=lambda f: -f.severity.rank):  # stable: rule order within a level
        k = key(f)
        if k not in seen or f.severity > seen[k]:
            seen[k] = f.severity
            out.append(f)
    return out


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
