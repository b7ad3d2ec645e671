"""Rules never crash: empty runs, single steps, single layers, all-NaN/Inf arrays, missing metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from gradguard.diagnosis import Finding, Severity, diagnose
from gradguard.diagnosis.online import new_findings
from gradguard.metrics import GRAD_NORM_TOTAL, LAYER_METRICS, LOSS, LR
from gradguard.record.batch import Layer
from gradguard.runs.run import Run

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
        for m in draw(st.lists(st.sampled_from(LAYER_METRICS), unique=True))
    }
    scalars = {
        s: (steps, draw(arrays(np.float64, (n_steps,), elements=values)))
        for s in draw(st.lists(st.sampled_from([LOSS, LR, GRAD_NORM_TOTAL]), unique=True))
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


SPECIAL = [float("nan"), float("inf"), -float("inf"), -1.0, -1e300, 0.0, 1e-300, 1e300]


@st.composite
def long_runs(draw: st.DrawFn) -> Run:
    """15-240 steps: enough for the loss rules (min_loss_points = 20, stall_min_points = 200) and the over-time checks
    (min_time_points = 10) to run. Series have a drawn trend (falling, flat, exploding) and noise,
    with NaN/Inf/negative/huge/tiny values injected at drawn positions."""
    n_steps = draw(st.integers(15, 240))
    n_layers = draw(st.integers(1, 5))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    layers = [
        Layer(i, f"l{i}", draw(st.sampled_from(KINDS)), 10, True, draw(st.sampled_from(ACTS)))
        for i in range(n_layers)
    ]
    stride = draw(st.integers(1, 3))
    steps = np.arange(n_steps) * stride
    if draw(st.booleans()):
        steps = steps[::-1].copy()  # out of order: the rules sort
    t = np.arange(n_steps, dtype=np.float64)

    def series(shape: tuple[int, ...]) -> np.ndarray:
        growth = draw(st.sampled_from([0.7, 0.97, 1.0, 1.0, 1.05, 1.5, 3.0]))
        scale = draw(st.sampled_from([1e-30, 1e-3, 1.0, 1e3, 1e30]))
        noise = draw(st.sampled_from([0.0, 0.1, 1.0, 3.0]))
        trend = growth ** t.reshape((-1,) + (1,) * (len(shape) - 1))
        with np.errstate(over="ignore"):
            v = scale * trend * np.exp(noise * rng.standard_normal(shape))
        if draw(st.booleans()):  # oscillate
            v = v * np.where(np.arange(shape[0]) % 2 == 0, 1.0, 3.0).reshape(trend.shape)
        for i in draw(st.lists(st.integers(0, v.size - 1), max_size=8)):
            v.flat[i] = draw(st.sampled_from(SPECIAL))
        if draw(st.integers(0, 9)) == 0:  # now and then a whole row of one special value
            v[draw(st.integers(0, shape[0] - 1))] = draw(st.sampled_from(SPECIAL))
        return v

    metrics = {
        m: (steps, series((n_steps, n_layers)))
        for m in draw(st.lists(st.sampled_from(LAYER_METRICS), unique=True, max_size=6))
    }
    scalars = {LOSS: (steps, series((n_steps,)))}
    for k in draw(st.lists(st.sampled_from([LR, GRAD_NORM_TOTAL]), unique=True)):
        scalars[k] = (steps, series((n_steps,)))
    return Run.from_arrays(layers=layers, metrics=metrics, scalars=scalars)


@pytest.mark.filterwarnings("error::RuntimeWarning")  # no numpy overflow noise for users either
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(long_runs())
def test_rules_never_crash_on_longer_runs(run: Run) -> None:
    findings = diagnose(run)
    check_output(findings)
    all_steps = np.concatenate(
        [run.metric(m)[0] for m in run.metric_names] + [run.scalar(k)[0] for k in run.scalar_names]
    )
    for f in findings:
        if f.steps is not None:
            assert all_steps.min() <= f.steps[0] <= f.steps[1] <= all_steps.max(), f
    seen: dict[tuple[str, str], Severity] = {}
    first = new_findings(run, seen)
    assert all(f.severity >= Severity.WARNING for f in first)
    assert new_findings(run, seen) == []  # the same run again: nothing new


def test_long_run_strategy_reaches_the_loss_and_time_rules() -> None:
    # the strategy is only useful if the loss rules and the over-time checks get past their
    # "not enough points" guards: they must fire on some generated runs
    from hypothesis import find

    find(long_runs(), lambda r: any(f.kind == "divergence" for f in diagnose(r)))
    find(long_runs(), lambda r: any(f.kind == "stalled_learning" for f in diagnose(r)))
    find(
        long_runs(),
        lambda r: any(
            f.kind == "exploding_gradients" and not f.layers and "growth" in f.data
            for f in diagnose(r)
        ),
    )


@pytest.mark.parametrize("n_steps", [0, 1, 2, 40])
@pytest.mark.parametrize("n_layers", [0, 1, 3])
@pytest.mark.parametrize("fill", [np.nan, np.inf, 0.0, 1.0])
def test_degenerate_shapes(n_steps: int, n_layers: int, fill: float) -> None:
    steps = np.arange(n_steps)
    run = Run.from_arrays(
        layers=[Layer(i, f"l{i}", "Linear", activation="Tanh") for i in range(n_layers)],
        metrics={m: (steps, np.full((n_steps, n_layers), fill)) for m in LAYER_METRICS},
        scalars={s: (steps, np.full(n_steps, fill)) for s in (LOSS, GRAD_NORM_TOTAL)},
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
        metrics={m: (np.arange(s), rng.lognormal(size=(s, n))) for m in LAYER_METRICS},
        scalars={k: (np.arange(s), rng.lognormal(size=s)) for k in (LOSS, GRAD_NORM_TOTAL)},
    )
    check_output(diagnose(run))
