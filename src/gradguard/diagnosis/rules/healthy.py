"""healthy: nothing at warning or above fired; say so, with the key numbers, so a person knows
the check ran. An empty run gets a ``no_data`` info finding instead."""

from __future__ import annotations

import math

import numpy as np

from gradguard.diagnosis._stats import nanmedian
from gradguard.diagnosis.finding import Finding, Severity
from gradguard.diagnosis.rules._loss import finite_loss, loss_track
from gradguard.diagnosis.view import RunView
from gradguard.format import number
from gradguard.metrics import GRAD_NORM, GRAD_NORM_TOTAL, LOSS, UPDATE_RATIO

__all__ = ["KIND", "check"]

KIND = "healthy"


def check(view: RunView) -> list[Finding]:
    run = view.run
    if not any(len(run.metric(n)[0]) for n in run.metric_names) and not any(
        len(run.scalar(n)[0]) for n in run.scalar_names
    ):
        return [
            Finding(
                kind="no_data",
                severity=Severity.INFO,
                evidence=f"run {run.name!r} holds no recorded statistics yet ({len(run.layers)} layers)",
                cause="Nothing was recorded: was the optimizer stepped while watched, and the monitor closed or flushed?",
            )
        ]
    parts: list[str] = []
    data: dict[str, float] = {}
    sig = view.backward_signal()
    fit = view.depth_fit(sig, "recent")
    if fit is not None and fit.ok:
        parts.append(
            f"{sig} x{number(fit.per_layer)} per layer toward the input "
            f"(first/last {number(fit.gain)} over {fit.n} layers)"
        )
        data["per_layer"], data["ratio_first_last"] = fit.per_layer, fit.gain
    track = loss_track(view)
    if track is not None:
        a, b = track.start, track.end
        parts.append(
            f"smoothed loss {number(a)} (steps {track.start_steps[0]}..{track.start_steps[1]}) "
            f"-> {number(b)} (steps {track.end_steps[0]}..{track.end_steps[1]})"
        )
        data["loss_start"], data["loss_end"] = a, b
    else:
        _, loss = finite_loss(view)
        if len(loss) >= 2:
            parts.append(f"loss {number(float(loss[0]))} -> {number(float(loss[-1]))}")
            data["loss_start"], data["loss_end"] = float(loss[0]), float(loss[-1])
    ur = float(nanmedian(view.column_median(UPDATE_RATIO)))
    if math.isfinite(ur):
        parts.append(f"median {UPDATE_RATIO} {number(ur)}")
        data[UPDATE_RATIO] = ur
    _, g = view.scalar(GRAD_NORM_TOTAL)
    g = g[np.isfinite(g)]
    if len(g):
        parts.append(f"median {GRAD_NORM_TOTAL} {number(float(np.median(g)))}")
        data[GRAD_NORM_TOTAL] = float(np.median(g))
    return [
        Finding(
            kind=KIND,
            severity=Severity.INFO,
            steps=view.step_range(GRAD_NORM, LOSS, GRAD_NORM_TOTAL),
            evidence="; ".join(parts) or "no rule found a problem",
            cause="No rule found vanishing or exploding gradients, non-finite values, saturation, dead units, a stall or divergence.",
            data=data,
        )
    ]
