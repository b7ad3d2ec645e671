"""exploding_gradients: the gradient (or the signal) grows geometrically with depth or over time.

Over depth: the mirror of vanishing_gradients, on dL/dh (``act_grad_norm``) when recorded, else
``grad_rms``; the forward activation scale (``act_std``) counts too. Weight gradients alone can
hide it: in a ReLU MLP at sigma_w^2 = 4 the activations grow forward as fast as dL/dh grows
backward, so grad_rms stays flat over depth while the loss starts far too large.
Over time: grad_norm_total growing by orders of magnitude, spiking above its running median
(robust z-score on the log scale), or weight norms growing by an order of magnitude.
Severity follows the magnitude: a BatchNorm net's mild growth (~1.2x per layer) stays silent.
"""

from __future__ import annotations

import math

import numpy as np

from gradguard.diagnosis._stats import nanmedian, spikes
from gradguard.diagnosis.finding import Finding, Severity
from gradguard.diagnosis.rules._common import grade
from gradguard.diagnosis.rules._loss import loss_track
from gradguard.diagnosis.view import DepthFit, RunView
from gradguard.format import number
from gradguard.metrics import (
    ACT_GRAD_NORM,
    ACT_SAT_FRAC,
    ACT_STD,
    GRAD_NORM_TOTAL,
    GRAD_RMS,
    WEIGHT_NORM,
)

__all__ = ["KIND", "check", "check_depth", "check_time"]

KIND = "exploding_gradients"
_CAUSE_DEPTH = (
    "Each layer multiplies the backpropagated signal by its weights and the activation's "
    "derivative; when that product exceeds 1 the gradient grows geometrically toward the input "
    "and the first layers take huge, unstable steps."
)
_CAUSE_TIME = (
    "The gradient norm grows or jumps during training: large steps move the weights into a "
    "steeper region, which gives still larger gradients (a feedback loop), often because the "
    "learning rate is too high for the curvature."
)


def _best(fits: list[DepthFit | None]) -> DepthFit | None:
    ok = [f for f in fits if f is not None and f.ok]
    return max(ok, key=lambda f: f.gain) if ok else None


def _loss_start_ratio(view: RunView) -> float:
    """The loss's start over its median over the second half (>1: started too large); NaN when
    the loss did not fall (see :meth:`LossTrack.later_ratio`)."""
    track = loss_track(view)
    return track.later_ratio() if track is not None else math.nan


def _forward_ratio(fit: DepthFit | None) -> float:
    """How much the activation scale grows from the first to the last main layer (NaN: no fit)."""
    return 1.0 / fit.gain if fit is not None and fit.ok and fit.gain > 0 else math.nan


def check_depth(view: RunView) -> list[Finding]:
    cfg = view.config
    sig = view.backward_signal()
    start, recent = view.depth_fit(sig, "start"), view.depth_fit(sig, "recent")
    back = _best([start, recent])
    fwd_fits = [view.depth_fit(ACT_STD, w) for w in ("start", "recent")]
    fwd = min((f for f in fwd_fits if f is not None and f.ok), key=lambda f: f.gain, default=None)
    back_ratio = back.gain if back is not None else math.nan
    fwd_ratio = _forward_ratio(fwd)
    ratio = max((r for r in (back_ratio, fwd_ratio) if math.isfinite(r)), default=math.nan)
    severity = grade(ratio, cfg)
    if severity is None:
        return []
    names = view.layer_names(view.main)
    parts = []
    if back is not None and back.per_layer > 1:
        what = f"dL/dh ({ACT_GRAD_NORM})" if sig == ACT_GRAD_NORM else str(GRAD_RMS)
        parts.append(
            f"{what} grows x{number(back.per_layer)} per layer toward the input; layer '{names[0]}' gets "
            f"{number(back.gain)}x the gradient of layer '{names[-1]}' (fitted over {back.n} layers, "
            f"steps {back.steps[0]}..{back.steps[1]})"
        )
    if fwd is not None and 0 < fwd.per_layer < 1:
        parts.append(
            f"activations grow x{number(1 / fwd.per_layer)} per layer forward "
            f"({ACT_STD} {number(fwd.first)} -> {number(fwd.last)})"
        )
    if sig == ACT_GRAD_NORM:
        wg = _best([view.depth_fit(GRAD_RMS, w) for w in ("start", "recent")])
        if wg is not None and wg.gain < cfg.depth_info:
            parts.append(
                f"weight-gradient RMS stays flat (x{number(wg.per_layer)} per layer), "
                "so per-layer grad norms alone hide it"
            )
    # A loss that starts far above its later level is evidence only of an explosion present
    # at initialisation (the forward signal blew up, so did the logits): a net that grew a mild
    # depth gain while it learned starts high because it had not learned yet.
    at_start = (
        start.gain if start is not None and start.ok else math.nan,
        _forward_ratio(fwd_fits[0]),
    )
    at_init = any(r >= cfg.depth_info for r in at_start)  # NaN: no fit, never >=
    lr = _loss_start_ratio(view) if at_init else math.nan
    if math.isfinite(lr) and lr >= cfg.loss_start_note:
        parts.append(f"the loss starts {number(lr)}x above its later level")
    # consequences make a mild explosion a warning: a loss that starts >= 10x too large, or
    # saturated units (the forward signal blew up into the flat tails)
    sat = view.column_median(ACT_SAT_FRAC)[view.main]
    saturated = bool(np.any(np.nan_to_num(sat) >= cfg.saturation_warning))
    if severity is Severity.INFO and (
        (math.isfinite(lr) and lr >= cfg.loss_start_warning) or saturated
    ):
        severity = Severity.WARNING
        if saturated:
            parts.append("units saturate (see the saturation finding)")
    steps = back.steps if back is not None else (fwd.steps if fwd is not None else None)
    return [
        Finding(
            kind=KIND,
            severity=severity,
            layers=names,
            steps=steps,
            evidence="; ".join(parts),
            cause=_CAUSE_DEPTH,
            remedies=view.remedies(KIND, saturation=saturated),
            data={
                "signal": sig,
                "per_layer": back.per_layer if back is not None else math.nan,
                "per_layer_start": start.per_layer if start is not None else math.nan,
                "per_layer_recent": recent.per_layer if recent is not None else math.nan,
                "ratio_first_last": back_ratio,
                "forward_ratio": fwd_ratio,
                "loss_start_ratio": lr,
            },
        )
    ]


def check_time(view: RunView) -> list[Finding]:
    cfg = view.config
    steps, g = view.scalar(GRAD_NORM_TOTAL)
    ok = np.isfinite(g) & (g > 0)
    steps, g = steps[ok], g[ok]
    typical = float(np.median(g)) if len(g) else math.nan  # the run's usual norm
    parts: list[str] = []
    severity: Severity | None = None
    data: dict[str, object] = {}
    onsets: list[int] = []  # steps where a warning-level sign began

    def raise_to(s: Severity) -> None:
        nonlocal severity
        severity = s if severity is None or s > severity else severity

    if len(g) >= cfg.min_time_points:
        # causal, like the loss rules: the trailing median at every step against the median of
        # the first start_steps, so a flush at step t judges what the final diagnosis judges there
        k = min(cfg.start_steps, len(g))
        base = float(np.median(g[:k]))
        win = min(cfg.loss_window, len(g))
        trail = np.median(np.lib.stride_tricks.sliding_window_view(np.log(g), win), axis=1)
        peak = int(np.argmax(trail))
        growth = float(np.exp(trail[peak]) / base) if base > 0 else math.inf
        data["growth"] = growth
        data["growth_warning"] = cfg.time_growth_warning
        if growth >= cfg.time_growth_warning and base > 0:
            over = np.flatnonzero(np.exp(trail) / base >= cfg.time_growth_warning)
            onsets.append(int(steps[int(over[0]) + win - 1]))
        data["peak_over_typical"] = (
            float(np.exp(trail[peak])) / typical if typical > 0 else math.inf
        )
        if growth >= cfg.time_growth_warning:
            raise_to(Severity.CRITICAL if growth >= cfg.time_growth_critical else Severity.WARNING)
            at = int(steps[peak + win - 1])
            parts.append(
                f"{GRAD_NORM_TOTAL} grew {number(growth)}x (median of steps "
                f"{int(steps[0])}..{int(steps[k - 1])} {number(base)} -> "
                f"{number(float(np.exp(trail[peak])))} over the {win} steps to step {at})"
            )
    hits = spikes(
        g,
        window=cfg.spike_window,
        ratio=cfg.spike_ratio,
        z=cfg.spike_z,
        min_points=cfg.spike_min_points,
        extreme=cfg.spike_extreme,
    )
    if len(hits):
        prev_med = np.asarray([float(np.median(g[max(0, i - cfg.spike_window) : i])) for i in hits])
        with np.errstate(over="ignore"):  # 1e300 over 1e-300: an inf ratio is still a spike
            jump = g[hits] / prev_med
        worst = int(np.argmax(jump))
        # a lone jump of less than spike_warning x that the loss shrugged off is worth a note,
        # not an alarm (healthy LSTMs show 10-15x jumps); larger ones warn
        data["spike_warned"] = float(jump[worst]) >= cfg.spike_warning
        raise_to(Severity.WARNING if data["spike_warned"] else Severity.INFO)
        parts.append(
            f"{GRAD_NORM_TOTAL} spiked {len(hits)} time(s), first at step {int(steps[hits[0]])}; "
            f"largest {number(float(jump[worst]))}x its running median "
            f"at step {int(steps[hits[worst]])}"
        )
        data["spike_steps"] = [int(steps[i]) for i in hits]
        if float(jump[worst]) >= cfg.spike_warning:
            onsets.append(int(steps[hits[0]]))
        data["spike_over_typical"] = float(np.max(g[hits])) / typical if typical > 0 else math.inf
    wsteps, w = view.metric(WEIGHT_NORM)
    if len(wsteps) >= cfg.min_time_points:
        order = np.argsort(wsteps, kind="stable")
        w = np.where(np.isfinite(w[order]), w[order], np.nan)
        # causal, like the gradient norm: the peak of each layer's trailing median over its
        # median at the first start_steps
        k = min(cfg.start_steps, len(w))
        win = min(cfg.loss_window, len(w))
        trail = nanmedian(np.lib.stride_tricks.sliding_window_view(w, win, axis=0), axis=2)
        with np.errstate(divide="ignore", invalid="ignore"):
            peak = np.nanmax(np.where(np.isfinite(trail), trail, -np.inf), axis=0)
            grow = peak / np.asarray(nanmedian(w[:k], axis=0))
        grown = np.flatnonzero(np.nan_to_num(grow, nan=0.0, posinf=0.0) >= cfg.weight_growth)
        if len(grown):
            raise_to(Severity.WARNING)
            most = int(grown[np.argmax(grow[grown])])
            parts.append(
                f"weight norms grew >= {number(cfg.weight_growth)}x in {len(grown)} layer(s) "
                f"(most: '{view.names[most]}' x{number(float(grow[most]))})"
            )
            data["weight_growth"] = {view.names[int(pos)]: float(grow[pos]) for pos in grown}
    if severity is None:
        return []
    # the norm only rose to the run's typical level (weights may have grown from a small init):
    # what a net escaping a tiny initial gradient looks like; coherence.reconcile folds it into a
    # vanishing finding when the loss did not break
    data["recovery"] = all(
        float(data[key]) <= cfg.spike_ratio  # type: ignore[arg-type]
        for key in ("peak_over_typical", "spike_over_typical")
        if key in data
        and (key != "peak_over_typical" or float(data["growth"]) >= cfg.time_growth_warning)  # type: ignore[arg-type]
    )
    return [
        Finding(
            kind=KIND,
            severity=severity,
            layers=(),
            # from where it began (the first warning-level spike or growth) to the last step
            steps=(min(onsets, default=int(steps[0])), int(steps[-1]))
            if len(steps)
            else view.step_range(WEIGHT_NORM),
            evidence="; ".join(parts),
            cause=_CAUSE_TIME,
            # a blow-up in the first steps: lower the learning rate first (clippers warm up)
            remedies=view.remedies(
                KIND,
                spike=bool(len(hits)),
                early=bool(onsets) and min(onsets) - int(steps[0]) <= 2 * cfg.start_steps,
            ),
            data=data,
        )
    ]


def check(view: RunView) -> list[Finding]:
    return check_depth(view) + check_time(view)
