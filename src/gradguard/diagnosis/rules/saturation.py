"""saturation: many tanh/sigmoid outputs sit at their bounds, where the derivative is ~0.

Uses ``act_sat_frac`` (fraction of outputs within 1% of the activation's bounds), the larger of its
median at the start and recently, per layer whose activation (``Layer.activation``) is bounded.
"""

from __future__ import annotations

import numpy as np

from gradguard.diagnosis.finding import Finding, Severity
from gradguard.diagnosis.view import RunView
from gradguard.format import number
from gradguard.metrics import ACT_SAT_FRAC

__all__ = ["KIND", "check"]

KIND = "saturation"


def check(view: RunView) -> list[Finding]:
    cfg = view.config
    frac = np.fmax(
        view.column_median(ACT_SAT_FRAC, "start"), view.column_median(ACT_SAT_FRAC, "recent")
    )
    hit = np.flatnonzero(np.nan_to_num(frac, nan=0.0) >= cfg.saturation_warning)
    if len(hit) == 0:
        return []
    worst = int(hit[np.argmax(frac[hit])])
    mean = float(np.mean(frac[hit]))
    severity = (
        Severity.CRITICAL if float(frac[worst]) >= cfg.saturation_critical else Severity.WARNING
    )
    acts = {view.run.layers[int(pos)].activation for pos in hit} - {None}
    act = ", ".join(sorted(str(a) for a in acts)) or "bounded activation"
    return [
        Finding(
            kind=KIND,
            severity=severity,
            layers=view.layer_names(hit),
            steps=view.step_range(ACT_SAT_FRAC),
            evidence=(
                f"{number(100 * mean)}% of {act} outputs lie within 1% of their bounds in "
                f"{len(hit)} layer(s) (worst '{view.names[worst]}': {number(100 * float(frac[worst]))}%)"
            ),
            cause=(
                f"Pre-activations are so large that {act} is flat there: its derivative is ~0, so "
                "these units pass almost no gradient back. Usually the weights are too large."
            ),
            remedies=view.remedies(
                KIND, saturation=True, activation=next(iter(acts), view.activation)
            ),
            data={"sat_frac": {view.names[int(pos)]: float(frac[pos]) for pos in hit}},
        )
    ]
