"""Turn preflight measurements into Findings (vanishing, exploding, saturating, dead units).

Thresholds (module constants, each with its reason):
- the gradient ratio R = ||dL/d out(first layer)|| / ||dL/d out(last layer)||: below 1e-2 the
  first layers learn ~100x slower than the last (vanishing, critical below 1e-4); above 1e2 they
  get ~100x larger updates (exploding, critical above 1e4). Non-finite values are critical.
- saturation: a layer whose bounded activation has > 25% of outputs within 1% of a bound
  passes back almost no gradient through those units (critical above 50%).
- dead units: a unit that outputs exactly 0 for every example of a batch of >= 8 gets no gradient
  (> 25% of a layer's units: warning, > 50%: critical) - counted only where the layer's zero
  fraction also exceeds 60%. A centred ReLU layer zeroes ~50% of its outputs; in a deep bias-free
  ReLU stack the inputs' correlations approach 1, so each unit is on for all examples or off for
  all, and half the units look "dead" on one batch without being dead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from gradguard.diagnosis.finding import Finding, Remedy, Severity
from gradguard.format import number

__all__ = ["findings_for", "VERDICTS", "remedies"]

VANISH_WARN, VANISH_CRIT = 1e-2, 1e-4
EXPLODE_WARN, EXPLODE_CRIT = 1e2, 1e4
SAT_WARN, SAT_CRIT = 0.25, 0.5
DEAD_WARN, DEAD_CRIT = 0.25, 0.5
DEAD_MIN_ZERO_FRAC = 0.6
MIN_ROWS_FOR_DEAD = 8

# finding kind -> verdict word
VERDICTS = {
    "nonfinite": "exploding",
    "exploding_gradients": "exploding",
    "vanishing_gradients": "vanishing",
    "saturation": "saturating",
    "dead_units": "dead units",
    "healthy": "healthy",
}


def remedies(kind: str, **context: Any) -> tuple[Remedy, ...]:
    """Ranked remedies from the knowledge base (imported lazily: ``diagnosis.knowledge``)."""
    from gradguard.diagnosis.knowledge import remedies_for

    return tuple(remedies_for(kind, **context))


def _names(rows: Sequence[Any], idx: Sequence[int]) -> tuple[str, ...]:
    return tuple(rows[i].name for i in idx)


def findings_for(
    rows: Sequence[Any],
    *,
    grad_ratio: float,
    backward_gain: float,
    nonfinite: int,
    activation: str | None,
    jacobian_msv: float | None,
    has_norm: bool = False,
) -> list[Finding]:
    """Findings for one preflight pass, most severe first (a 'healthy' one when nothing is wrong)."""
    out: list[Finding] = []
    saturated = any(math.isfinite(r.sat_frac) and r.sat_frac > SAT_WARN for r in rows)
    ctx: dict[str, Any] = {
        "activation": activation,
        "depth": len(rows),
        "has_norm": has_norm,
        "saturation": saturated,
    }
    fitted = (
        f"; fitted per-layer gain {number(backward_gain)}" if math.isfinite(backward_gain) else ""
    )
    if nonfinite:
        out.append(
            Finding(
                "nonfinite",
                Severity.CRITICAL,
                evidence=f"{nonfinite} non-finite values in the forward or backward pass at init",
                cause="activations or gradients overflow before training starts",
                remedies=remedies("nonfinite", **ctx),
                data={"nonfinite": nonfinite},
            )
        )
    if math.isfinite(grad_ratio) or grad_ratio == math.inf:
        evidence = (
            f"gradient norm at the first layer's output is {number(grad_ratio)}x that at the last "
            f"layer's output{fitted}"
            if grad_ratio > 0
            else f"the gradient at the first layer's output underflowed to 0{fitted}"
        )
        data = {"grad_ratio": grad_ratio, "backward_gain": backward_gain}
        if grad_ratio < VANISH_WARN:
            sev = Severity.CRITICAL if grad_ratio < VANISH_CRIT else Severity.WARNING
            out.append(
                Finding(
                    "vanishing_gradients",
                    sev,
                    layers=(rows[0].name, rows[-1].name),
                    evidence=evidence,
                    cause="each layer multiplies the backward signal by less than 1 "
                    "(ordered phase, chi_1 < 1), so early layers barely learn",
                    remedies=remedies("vanishing_gradients", **ctx),
                    data=data,
                )
            )
        elif grad_ratio > EXPLODE_WARN:
            sev = Severity.CRITICAL if grad_ratio > EXPLODE_CRIT else Severity.WARNING
            out.append(
                Finding(
                    "exploding_gradients",
                    sev,
                    layers=(rows[0].name, rows[-1].name),
                    evidence=evidence,
                    cause="each layer multiplies the backward signal by more than 1 "
                    "(chaotic phase, chi_1 > 1), so early layers get huge updates",
                    remedies=remedies("exploding_gradients", **ctx),
                    data=data,
                )
            )
    sat = [i for i, r in enumerate(rows) if math.isfinite(r.sat_frac) and r.sat_frac > SAT_WARN]
    if sat:
        worst = max(rows[i].sat_frac for i in sat)
        out.append(
            Finding(
                "saturation",
                Severity.CRITICAL if worst > SAT_CRIT else Severity.WARNING,
                layers=_names(rows, sat),
                evidence=f"{len(sat)} layers have > {SAT_WARN:.0%} of outputs within 1% of the "
                f"activation's bounds (worst {worst:.0%})",
                cause="pre-activations are too large for a bounded activation; its derivative is "
                "~0 there, so gradients stop",
                remedies=remedies("saturation", **ctx),
                data={"sat_frac": {rows[i].name: rows[i].sat_frac for i in sat}},
            )
        )
    dead = [
        i
        for i, r in enumerate(rows)
        if math.isfinite(r.dead_frac)
        and r.dead_frac > DEAD_WARN
        and r.zero_frac > DEAD_MIN_ZERO_FRAC
    ]
    if dead:
        worst = max(rows[i].dead_frac for i in dead)
        out.append(
            Finding(
                "dead_units",
                Severity.CRITICAL if worst > DEAD_CRIT else Severity.WARNING,
                layers=_names(rows, dead),
                evidence=f"{len(dead)} layers have > {DEAD_WARN:.0%} of units at exactly 0 for "
                f"every example (worst {worst:.0%})",
                cause="units whose pre-activation is negative for all inputs get no gradient",
                remedies=remedies("dead_units", **ctx),
                data={"dead_frac": {rows[i].name: rows[i].dead_frac for i in dead}},
            )
        )
    if not out:
        jac = (
            f"; Jacobian mean squared singular value {number(jacobian_msv)}" if jacobian_msv else ""
        )
        out.append(
            Finding(
                "healthy",
                Severity.INFO,
                evidence=f"gradient ratio first/last layer {number(grad_ratio)}{fitted}{jac}",
                cause="signals and gradients keep their scale through the depth at these weights",
                data={"grad_ratio": grad_ratio, "backward_gain": backward_gain},
            )
        )
    out.sort(key=lambda f: -f.severity.rank)
    return out
