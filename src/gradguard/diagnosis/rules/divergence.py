"""divergence: the loss rises clearly above its start or its best level, spikes, or oscillates.

All judgments read the run's :class:`~gradguard.diagnosis.rules._loss.LossTrack` (a trailing
median against the first recorded losses and the loss's own noise). Severity:

- critical: the smoothed loss *ends* above where it started (the run is worse than at
  initialisation), or it rose to >= ``divergence_critical`` x its start or best level;
- warning: it rose clearly above its start or its best level and came back, or it rose and
  stayed below those critical levels, or single loss values spiked, or the loss oscillates.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from gradguard.diagnosis._stats import spikes
from gradguard.diagnosis.finding import Finding, Severity
from gradguard.diagnosis.rules._loss import LossTrack, finite_loss, loss_track
from gradguard.diagnosis.view import RunView
from gradguard.format import number

__all__ = ["KIND", "Oscillation", "check", "oscillation"]

KIND = "divergence"


def _episode(track: LossTrack, mask: np.ndarray) -> tuple[int, int] | None:
    """(first index where mask holds, index of its worst smoothed loss from there)."""
    first = track.first(mask)
    if first is None:
        return None
    worst = first + int(np.argmax(track.smooth[first:]))
    return first, worst


class Oscillation(NamedTuple):
    """How a run of loss values zig-zags: ``alternation`` is the fraction of interior points
    that are turning points (a step up then down, or down then up), ``amplitude`` the median
    step over the median level, ``z`` the turning-point count in standard deviations above
    what independent noise gives (turning-point test: mean 2(n-2)/3, variance (16n-29)/90 for
    n points)."""

    alternation: float
    amplitude: float
    z: float


def oscillation(tail: np.ndarray) -> Oscillation:
    """The :class:`Oscillation` of ``tail`` (>= 4 loss values, in step order)."""
    n = len(tail)
    d = np.diff(tail)
    turns = int(np.sum(np.sign(d[1:]) * np.sign(d[:-1]) < 0))
    amplitude = float(np.median(np.abs(d)) / max(float(np.median(np.abs(tail))), 1e-12))
    z = (turns - 2.0 * (n - 2) / 3.0) / math.sqrt((16.0 * n - 29.0) / 90.0)
    return Oscillation(turns / (n - 2), amplitude, z)


def check(view: RunView) -> list[Finding]:
    cfg = view.config
    steps, loss = finite_loss(view)
    if len(loss) < 3:
        return []
    track = loss_track(view)  # None below min_loss_points: only extreme spikes are judged then
    parts: list[str] = []
    severity: Severity | None = None
    early = False
    above = rise = None

    def raise_to(s: Severity) -> None:
        nonlocal severity
        severity = s if severity is None or s > severity else severity

    if track is not None:
        smooth = track.smooth
        a, b = track.start_steps
        start_txt = f"its start {number(track.start)} (steps {a}..{b})"
        above = _episode(track, track.above_start)
        if above is not None:
            first, worst = above
            ends_above = bool(track.above_start[-1])
            huge = track.start > 0 and smooth[worst] >= cfg.divergence_critical * track.start
            raise_to(Severity.CRITICAL if ends_above or huge else Severity.WARNING)
            early = first <= max(cfg.start_steps, track.window) + track.window
            if ends_above:
                parts.append(
                    f"the smoothed loss ended above {start_txt}: {number(track.end)} at step "
                    f"{int(steps[-1])}, first clearly above at step {int(steps[first])}, "
                    f"worst {number(float(smooth[worst]))} at step {int(steps[worst])}"
                )
            else:
                parts.append(
                    f"the smoothed loss rose above {start_txt} from step {int(steps[first])} "
                    f"(worst {number(float(smooth[worst]))} at step {int(steps[worst])}) and came "
                    f"back to {number(track.end)} by step {int(steps[-1])}"
                )
        # a rise from the best level reached: only reported where it is not already the rise above
        # the start (same episode, one sentence)
        rise_mask = track.risen & ~track.above_start
        rise = _episode(track, rise_mask)
        if rise is not None:
            first, worst = rise
            best = float(track.best_so_far[first])
            ratio = float(smooth[worst]) / best if best > 0 else float("nan")
            raise_to(
                Severity.CRITICAL
                if best > 0 and ratio >= cfg.divergence_critical
                else Severity.WARNING
            )
            still = bool(track.risen[-1])
            parts.append(
                f"the smoothed loss rose from its best {number(best)} to "
                f"{number(float(smooth[worst]))} at step {int(steps[worst])} "
                + (f"({number(ratio)}x), " if best > 0 else "")
                + f"first clearly at step {int(steps[first])}"
                + ("" if still else f", back to {number(track.end)} by step {int(steps[-1])}")
            )
    hits = spikes(
        np.abs(loss),
        window=cfg.spike_window,
        ratio=cfg.loss_spike_ratio,
        z=cfg.spike_z,
        min_points=cfg.spike_min_points,
        extreme=cfg.spike_extreme,
    )
    # a hard mini-batch near zero loss jumps 100x and means nothing: a spike must also give back
    # rise_min_fraction of the descent achieved before it (the same yardstick as a rise)
    start = track.start if track is not None else float(loss[0])
    keep = []
    for i in hits:
        before = float(np.median(loss[max(0, i - cfg.spike_window) : i]))
        if loss[i] - before >= cfg.rise_min_fraction * max(start - before, 0.0):
            keep.append(i)
    hits = np.asarray(keep, dtype=np.int64)
    if len(hits):
        raise_to(Severity.WARNING)
        parts.append(
            f"single loss values spiked {len(hits)} time(s), first at step {int(steps[hits[0]])} "
            f"({number(float(loss[hits[0]]))})"
        )
    tail = loss[-max(cfg.min_loss_points, len(loss) // 4) :]
    osc = oscillation(tail) if track is not None and len(tail) >= 4 else None
    if (
        osc is not None
        and osc.alternation >= cfg.oscillation_alternation
        and osc.amplitude >= cfg.oscillation_amplitude
        and osc.z >= cfg.oscillation_z
    ):
        raise_to(Severity.WARNING)
        parts.append(
            f"the loss oscillates over its last {len(tail)} points: "
            f"{number(100 * osc.alternation)}% of steps reverse direction "
            f"({number(osc.z)} standard deviations above mini-batch noise), "
            f"by {number(100 * osc.amplitude)}% of its level"
        )
    if severity is None:
        return []
    onset = [int(steps[e[0]]) for e in (above, rise) if e is not None]
    onset += [int(steps[hits[0]])] if len(hits) else []
    return [
        Finding(
            kind=KIND,
            severity=severity,
            layers=(),
            # from where it began (a rise or the first spike) to the last step judged
            steps=(min(onset, default=int(steps[0])), int(steps[-1])),
            evidence="; ".join(parts),
            cause=(
                "Steps overshoot: with a learning rate too large for the loss surface's curvature "
                "each update lands higher than the last, or bounces across a valley."
                + (
                    " It began in the first steps, before the weights could reach a region where "
                    "such steps are stable."
                    if early
                    else ""
                )
            ),
            remedies=view.remedies(KIND, spike=bool(len(hits)), early=early),
            data={
                "loss_start": track.start if track is not None else float(loss[0]),
                "loss_end": track.end if track is not None else float(loss[-1]),
                "loss_best": float(np.min(track.best_so_far)) if track is not None else None,
                "ended_above_start": bool(track.above_start[-1]) if track is not None else False,
                "onset_step": int(steps[min(i for i in (above, rise) if i is not None)[0]])
                if above is not None or rise is not None
                else None,
                "spike_steps": [int(steps[i]) for i in hits],
                "early": early,
            },
        )
    ]
