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

from gradguard.diagnosis._view import RunView
from gradguard.diagnosis.finding import Finding, Severity

__all__ = ["KIND", "check"]

KIND = "nonfinite"


def _bad_cells(view: RunView, name: str) -> tuple[np.ndarray, np.ndarray]:
    """``(steps, bad[S, L])`` where a per-layer metric is non-finite (see module docstring)."""
    steps, v = view.run.metric(name)  # raw: rows that are all NaN are evidence here
    v = np.asarray(v, dtype=np.float64)
    if len(steps) == 0 or v.ndim != 2 or v.shape != (len(steps), len(view.names)):
        return np.zeros(0, dtype=np.int64), np.zeros((0, len(view.names)), dtype=bool)
    if name == "nonfinite":
        return steps, np.nan_to_num(v, nan=0.0) > 0
    inf = np.isinf(v)
    if name == "update_ratio" or (name != "weight_norm" and view.run.has_metric("nonfinite")):
        # NaN there also means "no gradient this step" (an unused layer): the nonfinite
        # count is the authority on NaN gradients when it was recorded
        return steps, inf
    has_value = np.isfinite(v).any(axis=0, keepdims=True)  # the layer has a value somewhere
    return steps, inf | (np.isnan(v) & has_value)


def check(view: RunView) -> list[Finding]:
    per_source: dict[str, tuple[int, list[int]]] = {}  # source -> (first step, layers there)
    affected: set[int] = set()  # layers non-finite at any step
    for name in ("weight_norm", "nonfinite", "grad_norm", "grad_rms", "update_ratio"):
        steps, bad = _bad_cells(view, name)
        rows = np.flatnonzero(bad.any(axis=1)) if bad.size else np.zeros(0, dtype=np.int64)
        if len(rows):
            s = int(steps[rows].min())
            r = int(rows[np.argmin(steps[rows])])
            per_source[name] = (s, [int(j) for j in np.flatnonzero(bad[r])])
            affected.update(int(j) for j in np.flatnonzero(bad.any(axis=0)))
    for name in ("loss", "grad_norm_total"):
        steps, v = view.scalar(name)
        bad_rows = np.flatnonzero(~np.isfinite(v))
        if name == "grad_norm_total" and "nonfinite" in view.run.metric_names:
            bad_rows = np.flatnonzero(np.isinf(v))  # NaN there may mean "no gradients at all"
        if len(bad_rows):
            per_source[name] = (int(steps[bad_rows].min()), [])
    if not per_source:
        return []
    first_step = min(s for s, _ in per_source.values())
    at_first = {k: lays for k, (s, lays) in per_source.items() if s == first_step}
    # weights first (the origin), then gradients, in forward order
    layer: int | None = None
    for name in ("weight_norm", "nonfinite", "grad_norm", "grad_rms", "update_ratio"):
        if at_first.get(name):
            layer = min(at_first[name])
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
    where = f" in layer '{view.names[layer]}'" if layer is not None else ""
    evidence = (
        f"first NaN/Inf at step {first_step}{where} ({', '.join(what)}); "
        f"{len(affected)} layer(s) affected in all"
    )
    if "loss" in per_source:
        evidence += f"; loss non-finite from step {per_source['loss'][0]}"
    grad_steps, g = view.scalar("grad_norm_total")
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
            layers=(view.names[layer],) if layer is not None else (),
            steps=(first_step, last_step),
            evidence=evidence,
            cause=(
                "A value overflowed or an undefined operation (log of 0, 0/0, sqrt of a negative) "
                "produced NaN/Inf; once in the weights it spreads to every output and gradient."
            ),
            remedies=view.remedies(KIND, spike=spike),
            data={
                "first_step": first_step,
                "first_layer": view.names[layer] if layer is not None else None,
                "sources": {k: s for k, (s, _) in per_source.items()},
                "layers_affected": [view.names[j] for j in sorted(affected)],
            },
        )
    ]
