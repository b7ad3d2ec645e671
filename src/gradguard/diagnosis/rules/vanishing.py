"""vanishing_gradients: the backpropagated gradient shrinks geometrically toward the input.

Fits log10 of the per-unit gradient (dL/dh from ``act_grad_norm`` when recorded, else the
weight-gradient RMS ``grad_rms``) against layer depth, at the start of the run and recently, and
reports the per-layer factor and the fitted ratio first/last layer. Early layers whose
``update_ratio`` is still within 10x of the last layers' (an adaptive optimizer compensates) make
it one level less severe.
"""

from __future__ import annotations

import math

import numpy as np

from gradguard.diagnosis.finding import Finding, Severity
from gradguard.diagnosis.knowledge import activation_family
from gradguard.diagnosis.rules._common import downgrade, grade
from gradguard.diagnosis.view import DepthFit, RunView
from gradguard.format import number
from gradguard.metrics import ACT_GRAD_NORM, ACT_SAT_FRAC, GRAD_RMS, UPDATE_RATIO

__all__ = ["KIND", "check"]

KIND = "vanishing_gradients"
_SIGNAL = {
    ACT_GRAD_NORM: f"dL/dh ({ACT_GRAD_NORM})",
    GRAD_RMS: f"the weight-gradient RMS ({GRAD_RMS})",
}


def _worst(fits: list[DepthFit]) -> DepthFit | None:
    fits = [f for f in fits if f.ok]
    return min(fits, key=lambda f: f.gain) if fits else None


def check(view: RunView) -> list[Finding]:
    cfg = view.config
    sig = view.backward_signal()
    start, recent = view.depth_fit(sig, "start"), view.depth_fit(sig, "recent")
    fit = _worst([f for f in (start, recent) if f])
    if fit is None:
        return []
    ratio = 1.0 / fit.gain if fit.gain > 0 else math.inf
    # exact zeros in the early part (default: half) of the stack: the gradient underflowed there
    early_zero = [
        main_pos
        for main_pos in fit.zero_layers
        if main_pos < len(view.main) * cfg.underflow_early_fraction
    ]
    severity = Severity.CRITICAL if early_zero else grade(ratio, cfg)
    if severity is None or fit.per_layer >= 1.0:
        return []
    main_names = view.layer_names(view.main)
    ur = view.column_median(UPDATE_RATIO)[view.main]
    finite = np.flatnonzero(np.isfinite(ur))
    ur_first = float(ur[finite[0]]) if len(finite) else math.nan
    ur_last = float(ur[finite[-1]]) if len(finite) else math.nan
    compensated = (
        not early_zero
        and ur_last > 0
        and math.isfinite(ur_first / ur_last)
        and ur_first / ur_last >= cfg.update_ratio_compensated
    )
    if compensated:
        severity = downgrade(severity)
    evidence = (
        f"{_SIGNAL[sig]} falls x{number(fit.per_layer)} per layer toward the input; "
        f"layer '{main_names[0]}' gets {number(fit.gain)} of the gradient of layer '{main_names[-1]}' "
        f"(fitted over {fit.n} layers, steps {fit.steps[0]}..{fit.steps[1]}; "
        f"measured {number(fit.first)} vs {number(fit.last)})"
    )
    if early_zero:
        evidence += f"; {len(fit.zero_layers)} layers get exactly zero gradient (underflow)"
    if len(finite) >= 2:
        evidence += f"; {UPDATE_RATIO} {number(ur_first)} in the first layer vs {number(ur_last)} in the last"
        if compensated:
            evidence += " (the optimizer compensates: early layers still move)"
    act = view.activation
    cause = (
        "Backpropagation multiplies the gradient at each layer by the weights and the activation's "
        "derivative; when that product is below 1 the gradient shrinks geometrically with depth, "
        "so the first layers barely learn."
    )
    if activation_family(act) == "saturating":
        bound = "at most 0.25" if "sigmoid" in str(act).lower() else "near 0 where it saturates"
        cause += f" {act}'s derivative is {bound}, which makes the factor small."
    sat = view.column_median(ACT_SAT_FRAC)[view.main]
    saturated = bool(np.any(np.nan_to_num(sat) >= cfg.saturation_warning))
    return [
        Finding(
            kind=KIND,
            severity=severity,
            layers=main_names,
            steps=fit.steps,
            evidence=evidence,
            cause=cause,
            remedies=view.remedies(KIND, saturation=saturated),
            data={
                "signal": sig,
                "per_layer": fit.per_layer,
                "per_layer_start": start.per_layer if start is not None else math.nan,
                "per_layer_recent": recent.per_layer if recent is not None else math.nan,
                "ratio_first_last": fit.gain,
                "first": fit.first,
                "last": fit.last,
                "zero_layers": [main_names[main_pos] for main_pos in fit.zero_layers],
                "update_ratio_first": ur_first,
                "update_ratio_last": ur_last,
                "compensated": compensated,
            },
        )
    ]
