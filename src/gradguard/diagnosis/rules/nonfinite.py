"""nonfinite: NaN/Inf in the loss, gradients or weights: the first step, where it was born.

Sources: the per-layer ``nonfinite`` count (> 0); Inf in any per-layer metric; NaN
``weight_norm`` in a layer that has finite values at other steps; NaN ``grad_norm``/``grad_rms``
likewise but only when no ``nonfinite`` count was recorded (NaN also means "no gradient this
step", e.g. a layer used only sometimes); a non-finite ``loss``; an Inf ``grad_norm_total``.

An Inf *statistic* of finite values is not a source: a sum of squares of gradients up to 1e31
overflows float32 to Inf while every gradient is finite (``nonfinite`` 0, ``grad_max`` finite);
that is an explosion (the exploding rule's), and this rule records the steps in
``data["statistic_overflow_steps"]``.

The origin, at the first bad step, and the pass it came from:

- ``weights``: a layer whose weights are non-finite (a NaN weight makes every output NaN);
- ``forward``: else, where activation statistics were recorded at that step, the first layer in
  forward order whose output is non-finite (position 0 with finite weights: the input, or that
  layer's own forward);
- ``loss``: the outputs are finite but the loss is not;
- ``backward``: the loss (and the outputs, where recorded) are finite but gradients are not: the
  first layer in *backward* order (the last in forward order) with a non-finite gradient -- the
  layers before it only inherited the NaN;
- ``forward or loss``: the loss is non-finite and no activation statistics were recorded at that
  step; no layer is named (``detail_every=1`` or ``gg.locate_nonfinite`` finds it).
"""

from __future__ import annotations

import numpy as np

from gradguard.diagnosis.finding import Finding, Severity
from gradguard.diagnosis.view import RunView
from gradguard.metrics import (
    ACT_MEAN,
    ACT_STD,
    GRAD_MAX,
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


def _bad_cells(
    view: RunView, name: Metric, clean: dict[int, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """``(steps, bad[S, L])`` where a per-layer metric is non-finite (see module docstring)."""
    steps, v = view.run.metric(name)  # raw: rows that are all NaN are evidence here
    v = np.asarray(v, dtype=np.float64)
    if len(steps) == 0 or v.ndim != 2 or v.shape != (len(steps), len(view.names)):
        return np.zeros(0, dtype=np.int64), np.zeros((0, len(view.names)), dtype=bool)
    if name == NONFINITE:
        return steps, np.nan_to_num(v, nan=0.0) > 0
    inf = np.isinf(v)
    if name in (GRAD_NORM, GRAD_RMS) and clean:
        none = np.zeros(len(view.names), dtype=bool)
        inf &= ~np.stack([clean.get(int(s), none) for s in steps])
    if name.group == "update" or (name != WEIGHT_NORM and view.run.has_metric(NONFINITE)):
        # NaN there also means "no gradient this step" (an unused layer): the nonfinite
        # count is the authority on NaN gradients when it was recorded
        return steps, inf
    has_value = np.isfinite(v).any(axis=0, keepdims=True)  # the layer has a value somewhere
    return steps, inf | (np.isnan(v) & has_value)


def _clean_layers(view: RunView) -> dict[int, np.ndarray]:
    """Step -> ``bool[L]``: the layer held no NaN/Inf gradient or weight at that step (its
    non-finite count is 0 and its max |g| is not Inf). An Inf statistic of a clean layer -- or an
    Inf total norm at a step where every layer is clean -- is an overflow of the statistic (a
    float32 sum of squares), not a NaN/Inf value."""
    if not (view.run.has_metric(NONFINITE) and view.run.has_metric(GRAD_MAX)):
        return {}
    nf_steps, nf = view.run.metric(NONFINITE)
    mx_steps, mx = view.run.metric(GRAD_MAX)
    mx_at = {int(s): row for s, row in zip(mx_steps, mx)}
    return {
        int(s): (np.nan_to_num(row, nan=0.0) == 0) & ~np.isinf(mx_at[int(s)])
        for s, row in zip(nf_steps, nf)
        if int(s) in mx_at
    }


def _bad_outputs(view: RunView, step: int) -> list[int] | None:
    """Forward positions whose activation statistics are non-finite at ``step`` (None: none
    recorded at that step)."""
    found = None
    for name in (ACT_MEAN, ACT_STD):
        steps, v = view.run.metric(name)
        rows = np.flatnonzero(steps == step)
        if not len(rows) or v.ndim != 2:
            continue
        row = np.asarray(v[rows[0]], dtype=np.float64)
        seen = np.isfinite(v).any(axis=0)  # NaN also means "not measured" for a layer
        bad = ~np.isfinite(row) & (seen | np.isinf(row))
        found = sorted(set(found or []) | {int(p) for p in np.flatnonzero(bad)})
    return found


def _origin(
    view: RunView, first_step: int, at_first: dict[Metric, list[int]]
) -> tuple[int | None, str]:
    """``(forward position or None, pass)`` where the first NaN/Inf was born (module docstring)."""
    if at_first.get(WEIGHT_NORM):
        return min(at_first[WEIGHT_NORM]), "weights"
    outputs = _bad_outputs(view, first_step)
    if outputs:
        return outputs[0], "forward"
    grads = sorted({pos for n in (NONFINITE, GRAD_NORM, GRAD_RMS) for pos in at_first.get(n, [])})
    if LOSS in at_first:
        return None, ("loss" if outputs is not None else "forward or loss")
    if grads:
        return max(grads), "backward"
    for name in _LAYER_SOURCES:
        if at_first.get(name):
            return min(at_first[name]), "update"
    return None, "unknown"


_PASS_WORDS = {
    "weights": "in the weights of",
    "forward": "in the forward output of",
    "backward": "in the backward pass, at the gradient of",
    "update": "in the update of",
}


def check(view: RunView) -> list[Finding]:
    # source -> (first bad step, forward positions bad there)
    clean = _clean_layers(view)  # step -> layers with no NaN/Inf value (overflow test)
    per_source: dict[Metric, tuple[int, list[int]]] = {}
    affected: set[int] = set()  # forward positions non-finite at any step
    for name in _LAYER_SOURCES:
        steps, bad = _bad_cells(view, name, clean)
        rows = np.flatnonzero(bad.any(axis=1)) if bad.size else np.zeros(0, dtype=np.int64)
        if len(rows):
            s = int(steps[rows].min())
            r = int(rows[np.argmin(steps[rows])])
            per_source[name] = (s, [int(pos) for pos in np.flatnonzero(bad[r])])
            affected.update(int(pos) for pos in np.flatnonzero(bad.any(axis=0)))
    overflow_steps: list[int] = []
    for name in _SCALAR_SOURCES:
        steps, v = view.scalar(name)
        bad_rows = np.flatnonzero(~np.isfinite(v))
        if name == GRAD_NORM_TOTAL and NONFINITE in view.run.metric_names:
            bad_rows = np.flatnonzero(np.isinf(v))  # NaN there may mean "no gradients at all"
            overflow = {st for st, row in clean.items() if row.all()}
            overflow_steps = [int(steps[r]) for r in bad_rows if int(steps[r]) in overflow]
            bad_rows = np.asarray(
                [r for r in bad_rows if int(steps[r]) not in overflow], dtype=np.int64
            )
        if len(bad_rows):
            per_source[name] = (int(steps[bad_rows].min()), [])
    if not per_source:
        return []
    first_step = min(s for s, _ in per_source.values())
    at_first = {k: lays for k, (s, lays) in per_source.items() if s == first_step}
    origin, born = _origin(view, first_step, at_first)
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
    if origin is not None:
        where = f" {_PASS_WORDS[born]} layer '{view.names[origin]}'"
        if born == "forward" and origin == 0:
            where += " (or in the input)"
    elif born == "loss":
        where = " in the loss (the model's outputs were finite)"
    elif born == "forward or loss":
        where = (
            " in the forward pass or the loss (no activation statistics at that step: "
            "detail_every=1 or gg.locate_nonfinite names the layer)"
        )
    else:
        where = ""
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
                "origin_pass": born,
                "statistic_overflow_steps": overflow_steps,
                "sources": {k: s for k, (s, _) in per_source.items()},
                "layers_affected": [view.names[pos] for pos in sorted(affected)],
            },
        )
    ]
