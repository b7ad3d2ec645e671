"""divergence: the loss rises above its best level, spikes, or oscillates step to step."""

from __future__ import annotations

import numpy as np

from gradguard.diagnosis._stats import spikes
from gradguard.diagnosis.finding import Finding, Severity
from gradguard.diagnosis.rules._loss import fifths, finite_loss
from gradguard.diagnosis.view import RunView
from gradguard.format import number

__all__ = ["KIND", "check"]

KIND = "divergence"


def _rolling_median(x: np.ndarray, w: int) -> np.ndarray:
    if len(x) < w:
        return np.asarray([np.median(x)])
    win = np.lib.stride_tricks.sliding_window_view(x, w)
    return np.median(win, axis=1)


def check(view: RunView) -> list[Finding]:
    cfg = view.config
    steps, loss = finite_loss(view)
    if len(loss) < cfg.min_loss_points:
        return []
    parts: list[str] = []
    severity: Severity | None = None
    start, end = fifths(loss)
    k = max(2, len(loss) // 5)
    smooth = _rolling_median(
        loss[:-k] if len(loss) - k >= 3 else loss,
        int(np.clip(len(loss) // 20, cfg.loss_window_min, cfg.loss_window_max)),
    )
    best = float(np.min(smooth))
    rise = end - best
    if end >= cfg.rise_ratio * best and best > 0 and rise >= cfg.rise_min_fraction * abs(start):
        severity = Severity.CRITICAL if end >= cfg.divergence_critical * best else Severity.WARNING
        parts.append(
            f"loss rose from its best {number(best)} to {number(end)} ({number(end / best)}x) "
            f"by step {int(steps[-1])}"
        )
    hits = spikes(
        np.abs(loss),
        window=cfg.spike_window,
        ratio=cfg.loss_spike_ratio,
        z=cfg.spike_z,
        min_points=cfg.spike_min_points,
    )
    if len(hits):
        severity = severity or Severity.WARNING
        parts.append(f"loss spiked {len(hits)} time(s), first at step {int(steps[hits[0]])}")
    tail = loss[-max(cfg.min_loss_points, len(loss) // 4) :]
    d = np.diff(tail)
    if len(d) >= 3:
        alternation = float(np.mean(np.sign(d[1:]) * np.sign(d[:-1]) < 0))
        amplitude = float(np.median(np.abs(d)) / max(float(np.median(np.abs(tail))), 1e-12))
        if alternation >= cfg.oscillation_alternation and amplitude >= cfg.oscillation_amplitude:
            severity = severity or Severity.WARNING
            parts.append(
                f"loss oscillates: {number(100 * alternation)}% of steps reverse direction, "
                f"by {number(100 * amplitude)}% of its level"
            )
    if severity is None:
        return []
    return [
        Finding(
            kind=KIND,
            severity=severity,
            layers=(),
            steps=(int(steps[0]), int(steps[-1])),
            evidence="; ".join(parts),
            cause=(
                "Steps overshoot: with a learning rate too large for the loss surface's curvature "
                "each update lands higher than the last, or bounces across a valley."
            ),
            remedies=view.remedies(KIND, spike=bool(len(hits))),
            data={
                "loss_best": best,
                "loss_end": end,
                "spike_steps": [int(steps[i]) for i in hits],
            },
        )
    ]
