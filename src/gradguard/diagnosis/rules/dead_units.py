"""dead_units: ReLU layers whose outputs are (almost) always zero.

Uses ``act_zero_frac`` (fraction of exact zeros in the activation's output), the larger of its
median at the start and recently, in layers followed by ReLU or ReLU6 (a healthy one: ~0.5).
"""

from __future__ import annotations

import numpy as np

from gradguard.diagnosis.finding import Finding, Severity
from gradguard.diagnosis.knowledge import activation_family
from gradguard.diagnosis.view import RunView
from gradguard.format import number
from gradguard.metrics import ACT_ZERO_FRAC

__all__ = ["KIND", "check"]

KIND = "dead_units"


def check(view: RunView) -> list[Finding]:
    cfg = view.config
    relu = np.array(
        [activation_family(lay.activation) == "dying" for lay in view.run.layers], dtype=bool
    )
    frac = np.fmax(
        view.column_median(ACT_ZERO_FRAC, "start"), view.column_median(ACT_ZERO_FRAC, "recent")
    )
    hit = np.flatnonzero(relu & (np.nan_to_num(frac, nan=0.0) >= cfg.dead_warning))
    if len(hit) == 0:
        return []
    worst = int(hit[np.argmax(frac[hit])])
    severity = Severity.CRITICAL if float(frac[worst]) >= cfg.dead_critical else Severity.WARNING
    return [
        Finding(
            kind=KIND,
            severity=severity,
            layers=view.layer_names(hit),
            steps=view.step_range(ACT_ZERO_FRAC),
            evidence=(
                f"{len(hit)} ReLU layer(s) output zero {number(100 * float(np.mean(frac[hit])))}% of the "
                f"time (worst '{view.names[worst]}': {number(100 * float(frac[worst]))}%; healthy ~50%)"
            ),
            cause=(
                "A ReLU unit whose pre-activation is negative for every input outputs 0 and gets "
                "gradient 0, so it can never recover; large steps or a negative bias shift kill units."
            ),
            remedies=view.remedies(KIND, activation="relu"),
            data={"zero_frac": {view.names[int(pos)]: float(frac[pos]) for pos in hit}},
        )
    ]
