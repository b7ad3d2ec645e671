"""nonfinite: NaN/Inf in the loss, gradients or weights: the first step, the first layer.

Sources: the per-layer ``nonfinite`` count (> 0); Inf in any per-layer metric; NaN
``weight_norm`` in a layer that has finite values at other steps; NaN ``grad_norm``/``grad_rms``
likewise but only when no ``nonfinite`` count was recorded (NaN also means "no gradient this
step", e.g. a layer used only sometimes); a non-finite ``loss``; an Inf ``grad_norm_total``. At the first bad step a
layer whose *weights* are non-finite is the origin (a NaN weight makes every gradient NaN);
otherwise the first layer in forward order with a non-finite gradient.
"""

from __future__ import annotations

import numpy as np

from gradguard.diagnosis.finding import Finding, Severity
from gradguard.diagnosis.view import RunView
from gradguard.metrics import (
    GRAD_NORM,
    GRAD_NORM_TOTAL,
    GRAD_RMS,
    LOSS,
    NONFINITE,
    UPDATE_RATIO,
    WEIGHT_NORM,
    Metric,
)

__all__ = ["KIND", "check"]

KIND = "nonfinite"  # the finding's kind (the rule), not the metric NONFINITE it reads
# Per-layer sources, in the order that names the origin at the first bad step: weights first (a
# NaN weight makes every gradient NaN), then the gradients
_LAYER_SOURCES = (WEIGHT_NORM, NONFINITE, GRAD_NORM, GRAD_RMS, UPDATE_RATIO)
_SCALAR_SOURCES = (LOSS, GRAD_NORM_TOTAL)


def _bad_cells(view: RunView, name: Metric) -> tuple[np.ndarray, np.ndarray]:
    """``(steps, bad[S, L])`` where a per-layer metric is non-finite (see module docstring)."""
    steps, v = view.run.metric(name)  # raw: rows that are all NaN are evidence here
    v = np.asarray(v, dtype=np.float64)
    if len(steps) == 0 or v.ndim != 2 or v.shape != (len(steps), len(view.names)):
        return np.zeros(0, dtype=np.int64), np.zeros((0, len(view.names)), dtype=bool)
    if name == NONFINITE:
        return steps, np.nan_to_num(v, nan=0.0) > 0
    inf = np.isinf(v)
    if name.group == "update" or (name != WEIGHT_NORM and view.run.has_metric(NONFINITE)):
        # NaN there also means "no gradient this step" (an unused layer): the nonfinite
        # count is the authority on NaN gradients when it was recorded
        return steps, inf
    has_value = np.isfinite(v).any(axis=0, keepdims=True)  # the layer has a value somewhere
    return steps, inf | (np.isnan(v) & has_value)


def check(view: RunView) -> list[Finding]:
    # source -> (first bad step, forward positions bad there)
    per_source: dict[Metric, tuple[int, list[int]]] = {}
    affected: set[int] = set()  # forward positions non-finite at any step
    for name in _LAYER_SOURCES:
        steps, bad = _bad_cells(view, name)
        rows = np.flatnonzero(bad.any(axis=1)) if bad.size else np.zeros(0, dtype=np.int64)
        if len(rows):
            s = int(steps[rows].min())
            r = int(rows[np.argmin(steps[rows])])
            per_source[name] = (s, [int(pos) for pos in np.flatnonzero(bad[r])])
            affected.update(int(pos) for pos in np.flatnonzero(bad.any(axis=0)))
    for name in _SCALAR_SOURCES:
        steps, v = view.scalar(name)
        bad_rows = np.flatnonzero(~np.isfinite(v))
        if name == GRAD_NORM_TOTAL and NONFINITE in view.run.metric_names:
            bad_rows = np.flatnonzero(np.isinf(v))  # NaN there may mean "no gradients at all"
        if len(bad_rows):
            per_source[name] = (int(steps[bad_rows].min()), [])
    if not per_source:
        return []
    first_step = min(s for s, _ in per_source.values())
    at_first = {k: lays for k, (s, lays) in per_source.items() if s == first_step}
    # weights first (the origin), then gradients; there, the first layer in forward order
    origin: int | None = None
    for name in _LAYER_SOURCES:
        if at_first.get(name):
            origin = min(at_first[name])
            break
    what = sorted(at_first)
    last_step = max(
        [
            int(view.run.metric(n)[0].max())
            for n in view.run.metric_names
            if len(view.run.metric(n)[0])
        ]
        + [int(view.scalar(n)[0].max()) for n in view.run.scalar_names if len(view.scalar(n)[0])]
        + [first_step]
    )
    where = f" in layer '{view.names[origin]}'" if origin is not None else ""
    evidence = (
        f"first NaN/Inf at step {first_step}{where} ({', '.join(what)}); "
        f"{len(affected)} layer(s) affected in all"
    )
    if LOSS in per_source:
        evidence += f"; loss non-finite from step {per_source[LOSS][0]}"
    grad_steps, g = view.scalar(GRAD_NORM_TOTAL)
    before = g[(grad_steps < first_step) & np.isfinite(g)]
    cfg = view.config
    spike = bool(
        len(before) >= cfg.nonfinite_spike_points
        and before[-1] >= cfg.nonfinite_spike_ratio * np.median(before[:-1])
    )
    return [
        Finding(
            kind=KIND,
            severity=Severity.CRITICAL,
            layers=(view.names[origin],) if origin is not None else (),
            steps=(first_step, last_step),
            evidence=evidence,
            cause=(
                "A value overflowed or an undefined operation (log of 0, 0/0, sqrt of a negative) "
                "produced NaN/Inf; once in the weights it spreads to every output and gradient."
            ),
            remedies=view.remedies(KIND, spike=spike),
            data={
                "first_step": first_step,
                "first_layer": view.names[origin] if origin is not None else None,
                "sources": {k: s for k, (s, _) in per_source.items()},
                "layers_affected": [view.names[pos] for pos in sorted(affected)],
            },
        )
    ]
