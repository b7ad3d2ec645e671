"""Rules never crash: empty runs, single steps, single layers, all-NaN/Inf arrays, missing metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from gradguard.diagnosis import Finding, diagnose
from gradguard.diagnosis.online import new_findings
from gradguard.monitor import METRICS
from gradguard.store import Layer, Run

values = st.floats(allow_nan=True, allow_infinity=True, width=64) | st.sampled_from(
    [0.0, -1.0, 1e-300, 1e300, float("nan"), float("inf")]
)
ACTS = [None, "ReLU", "Tanh", "Sigmoid", "LeakyReLU", "GELU"]
KINDS = ["Linear", "Conv2d", "BatchNorm1d", "LayerNorm", "Embedding", "RNN"]


@st.composite
def runs(draw: st.DrawFn) -> Run:
    n_layers = draw(st.integers(0, 4))
    n_steps = draw(st.integers(0, 6))
    layers = [
        Layer(i, f"l{i}", draw(st.sampled_from(KINDS)), 10, True, draw(st.sampled_from(ACTS)))
        for i in range(n_layers)
    ]
    steps = np.arange(n_steps) * draw(st.integers(1, 3))
    metrics = {
        m: (steps, draw(arrays(np.float64, (n_steps, n_layers), elements=values)))
        for m in draw(st.lists(st.sampled_from(METRICS), unique=True))
    }
    scalars = {
        s: (steps, draw(arrays(np.float64, (n_steps,), elements=values)))
        for s in draw(st.lists(st.sampled_from(["loss", "lr", "grad_norm_total"]), unique=True))
    }
    return Run.from_arrays(layers=layers, metrics=metrics, scalars=scalars)


def check_output(findings: list[Finding]) -> None:
    assert findings, "diagnose always says something (a finding, healthy or no_data)"
    for f in findings:
        assert isinstance(f, Finding)
        str(f)
        json.dumps(f.to_dict(), allow_nan=False)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(runs())
def test_rules_never_crash(run: Run) -> None:
    check_output(diagnose(run))
    new_findings(run, {})


@pytest.mark.parametrize("n_steps", [0, 1, 2, 40])
@pytest.mark.parametrize("n_layers", [0, 1, 3])
@pytest.mark.parametrize("fill", [np.nan, np.inf, 0.0, 1.0])
def test_degenerate_shapes(n_steps: int, n_layers: int, fill: float) -> None:
    steps = np.arange(n_steps)
    run = Run.from_arrays(
        layers=[Layer(i, f"l{i}", "Linear", activation="Tanh") for i in range(n_layers)],
        metrics={m: (steps, np.full((n_steps, n_layers), fill)) for m in METRICS},
        scalars={s: (steps, np.full(n_steps, fill)) for s in ("loss", "grad_norm_total")},
    )
    findings = diagnose(run)
    check_output(findings)
    kinds = {f.kind for f in findings}
    if fill == np.inf and n_steps:
        assert "nonfinite" in kinds
    if n_steps == 0:
        assert kinds == {"no_data"}


def test_single_step_long_series_and_large_runs_are_fast_enough() -> None:
    rng = np.random.default_rng(0)
    s, n = 2000, 60
    run = Run.from_arrays(
        layers=[f"l{i}" for i in range(n)],
        metrics={m: (np.arange(s), rng.lognormal(size=(s, n))) for m in METRICS},
        scalars={k: (np.arange(s), rng.lognormal(size=s)) for k in ("loss", "grad_norm_total")},
    )
    check_output(diagnose(run))
