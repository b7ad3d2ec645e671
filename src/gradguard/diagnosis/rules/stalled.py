"""stalled_learning: the smoothed loss ends where it started (within ``stall_rel``), and not
clearly above it (that is divergence: one problem, one finding)."""

from __future__ import annotations

import numpy as np

from gradguard.diagnosis.finding import Finding, Severity
from gradguard.diagnosis.rules._loss import loss_track
from gradguard.diagnosis.view import RunView
from gradguard.format import number
from gradguard.metrics import ACT_SAT_FRAC

__all__ = ["KIND", "check"]

KIND = "stalled_learning"


def check(view: RunView) -> list[Finding]:
    cfg = view.config
    track = loss_track(view)
    if track is None or len(track.loss) < cfg.stall_min_points:
        return []
    steps, start, end = track.steps, track.start, track.end
    scale = max(abs(start), 1e-12)
    if abs(start) < cfg.converged_loss:
        return []  # already at zero: converged, not stalled
    if track.above_start.any() or track.risen.any():
        return []  # the loss rose clearly at some point: divergence reports it (one story)
    rel = (start - end) / scale
    if rel >= cfg.stall_rel:
        return []  # learning
    sat = view.column_median(ACT_SAT_FRAC)
    return [
        Finding(
            kind=KIND,
            severity=Severity.WARNING,
            layers=(),
            steps=(int(steps[0]), int(steps[-1])),
            evidence=(
                f"smoothed loss {number(start)} (steps {track.start_steps[0]}.."
                f"{track.start_steps[1]}) -> {number(end)} (steps {track.end_steps[0]}.."
                f"{track.end_steps[1]}): {number(-100 * rel)}% over {len(track.loss)} recorded "
                f"steps"
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
