"""stalled_learning: the loss has not moved over the run (first fifth vs last fifth)."""

from __future__ import annotations

import numpy as np

from gradguard.diagnosis.finding import Finding, Severity
from gradguard.diagnosis.rules._loss import fifths, finite_loss
from gradguard.diagnosis.view import RunView
from gradguard.format import number
from gradguard.metrics import ACT_SAT_FRAC

__all__ = ["KIND", "check"]

KIND = "stalled_learning"


def check(view: RunView) -> list[Finding]:
    cfg = view.config
    steps, loss = finite_loss(view)
    if len(loss) < cfg.min_loss_points:
        return []
    start, end = fifths(loss)
    scale = max(abs(start), 1e-12)
    if abs(start) < cfg.converged_loss:
        return []  # already at zero: converged, not stalled
    rel = (start - end) / scale
    if rel >= cfg.stall_rel or end > start * (1 + cfg.stall_rel):
        return []  # learning, or rising (divergence)
    sat = view.column_median(ACT_SAT_FRAC)
    return [
        Finding(
            kind=KIND,
            severity=Severity.WARNING,
            layers=(),
            steps=(int(steps[0]), int(steps[-1])),
            evidence=(
                f"loss {number(start)} -> {number(end)} ({number(-100 * rel)}%) over "
                f"{len(loss)} recorded steps ({int(steps[0])}..{int(steps[-1])})"
            ),
            cause=(
                "The parameters move but the loss does not: the steps are too small, the gradient "
                "does not reach the layers that matter, or the units are saturated or dead."
            ),
            remedies=view.remedies(
                KIND, saturation=bool(np.any(np.nan_to_num(sat) >= cfg.saturation_warning))
            ),
            data={"loss_start": start, "loss_end": end, "relative_decrease": rel},
        )
    ]
