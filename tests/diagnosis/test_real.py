"""Diagnosis of real short runs recorded with gg.watch on small MLPs (a second or two each)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import gradguard as gg
from gradguard.diagnosis import Finding, Severity, diagnose
from gradguard.metrics import (
    ACT_GRAD_NORM,
    ACT_ZERO_FRAC,
    GRAD_MAX,
    GRAD_NORM,
    GRAD_RMS,
    LOSS,
    NONFINITE,
)
from gradguard.runs.run import Run

D_IN, D_OUT, BATCH = 16, 4, 32


def mlp(
    depth: int,
    width: int,
    act: type[nn.Module],
    *,
    sigma_w2: float | None = None,
    std: float | None = None,
    batchnorm: bool = False,
) -> nn.Sequential:
    """depth Linear layers; weights N(0, std^2) or N(0, sigma_w2 / fan_in), zero biases."""
    mods: list[nn.Module] = []
    d = D_IN
    for i in range(depth):
        out = D_OUT if i == depth - 1 else width
        lin = nn.Linear(d, out)
        s = std if std is not None else math.sqrt((sigma_w2 if i < depth - 1 else 1.0) / d)
        nn.init.normal_(lin.weight, 0.0, s)
        nn.init.zeros_(lin.bias)
        mods.append(lin)
        if i < depth - 1:
            if batchnorm:
                mods.append(nn.BatchNorm1d(out))
            mods.append(act())
        d = out
    return nn.Sequential(*mods)


def record(model: nn.Module, *, steps: int = 12, lr: float = 0.05, inject=None, **watch) -> Run:
    """Train on a fixed random task with SGD under gg.watch (every statistic at every step)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, D_IN, generator=g)
    y = (x @ torch.randn(D_IN, D_OUT, generator=g)).argmax(1)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    mon = gg.watch(model, opt, config="full", **watch)
    with mon:
        for s in range(steps):
            idx = torch.randint(0, 256, (BATCH,), generator=g)
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            if inject is not None and s == inject[0]:
                inject[1].weight.grad[0, 0] = float("nan")  # NaN in layer j's gradient at step k
            opt.step()
            mon.log(loss=loss)
    return mon.run


def kinds(findings: list[Finding]) -> dict[str, Finding]:
    return {f.kind: f for f in findings}


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def test_deep_sigmoid_with_tiny_init_vanishes() -> None:
    # 20 sigmoid layers, N(0, 0.01^2): each layer multiplies dL/dh by ~0.25 * 0.01 * sqrt(width)
    run = record(mlp(20, 16, nn.Sigmoid, std=0.01), steps=8)
    found = kinds(diagnose(run))
    f = found["vanishing_gradients"]
    assert f.severity is Severity.CRITICAL
    assert f.data["signal"] == ACT_GRAD_NORM
    # reference: sigmoid'(~0) = 0.25 and ||W^T v|| ~ 0.01 * sqrt(16) ||v|| -> ~0.01 per layer
    assert 0.005 < f.data["per_layer"] < 0.02
    assert f.data["ratio_first_last"] < 1e-20
    assert f.remedies[0].name == "ReLU-family activation"
    assert "exploding_gradients" not in found


def test_tanh_with_large_weights_explodes() -> None:
    # sigma_w^2 = 25: chaotic phase, chi_1 ~ 2.9 (gg.theory) -> dL/dh grows toward the input
    chi1 = gg.theory.chi1("tanh", sigma_w2=25.0, sigma_b2=0.0)
    run = record(mlp(10, 32, nn.Tanh, sigma_w2=25.0), steps=8, lr=0.01)
    found = kinds(diagnose(run))
    f = found["exploding_gradients"]
    assert f.severity >= Severity.WARNING
    assert 1.3 < f.data["per_layer_start"] <= math.sqrt(chi1) * 1.2
    assert "vanishing_gradients" not in found
    assert found["saturation"].severity >= Severity.WARNING


def test_relu_he_batchnorm_is_healthy() -> None:
    run = record(mlp(10, 32, nn.ReLU, sigma_w2=2.0, batchnorm=True), steps=12)
    findings = diagnose(run)
    found = kinds(findings)
    assert "vanishing_gradients" not in found and "exploding_gradients" not in found
    assert "healthy" in found
    # BatchNorm's mild growth with depth (Yang et al. 2019) is measured, and small
    assert 0.9 < found["healthy"].data["per_layer"] < 1.3


def test_nan_injected_at_step_k_in_layer_j() -> None:
    model = mlp(6, 16, nn.ReLU, sigma_w2=2.0)
    k, j = 5, 3
    layer = [m for m in model if isinstance(m, nn.Linear)][j]
    name = next(n for n, m in model.named_modules() if m is layer)
    run = record(model, steps=9, inject=(k, layer))
    f = kinds(diagnose(run))["nonfinite"]
    assert f.severity is Severity.CRITICAL
    assert f.steps is not None and f.steps[0] == k
    assert f.layers == (name,)
    assert f.data["sources"][LOSS] == k + 1  # the NaN weight poisons the next forward pass
    assert f.remedies[0].how.startswith("print(gg.locate_nonfinite(model, x, loss_fn, y))")


def test_relu_sigma_w2_4_explodes_although_weight_gradients_are_flat() -> None:
    # ReLU at sigma_w^2 = 4: forward activations grow x sqrt(2) per layer, dL/dh grows x sqrt(2)
    # per layer backward; the weight gradient (their product) stays flat over depth.
    run = record(mlp(20, 32, nn.ReLU, sigma_w2=4.0), steps=10, lr=1e-3)
    f = kinds(diagnose(run))["exploding_gradients"]
    assert f.severity >= Severity.WARNING
    assert f.data["signal"] == ACT_GRAD_NORM
    # at initialisation: x sqrt(2) per layer (finite width 32 gives a little less or more)
    assert math.sqrt(2.0) / 1.15 < f.data["per_layer_start"] < math.sqrt(2.0) * 1.15
    assert f.data["forward_ratio"] > 10
    assert "weight-gradient RMS stays flat" in f.evidence
    # the weight-gradient profile on its own: no finding
    rms_only = Run.from_arrays(layers=run.layers, metrics={GRAD_RMS: run.metric(GRAD_RMS)})
    assert "exploding_gradients" not in kinds(diagnose(rms_only))


def test_underflowed_signal_counts_as_zero_in_the_vanishing_finding() -> None:
    # regression (issue 12, item 6): an exactly zero backpropagated signal was stored as NaN, so
    # the layers it reached dropped out of the vanishing fit and the underflow note never appeared
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for _ in range(40):
        lin = nn.Linear(16, 16)
        nn.init.normal_(lin.weight, 0.0, 0.01)  # gain ~0.04 per layer: 0.04**40 underflows fp32
        nn.init.zeros_(lin.bias)
        layers += [lin, nn.Tanh()]
    model = nn.Sequential(*layers, nn.Linear(16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with gg.watch(model, opt, config="full", diagnose_online=False) as mon:
        for _ in range(3):
            x, y = torch.randn(32, 16), torch.randint(0, 3, (32,))
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            mon.log(loss=loss)
    agn = mon.run.metric(ACT_GRAD_NORM)[1][-1]
    assert (agn == 0).sum() >= 10 and not np.isnan(agn[:-1]).any()
    (f,) = [f for f in gg.diagnose(mon.run) if f.kind == "vanishing_gradients"]
    assert f.severity is Severity.CRITICAL
    assert "exactly zero gradient (underflow)" in f.evidence
    assert len(f.data["zero_layers"]) == int((agn == 0).sum())


class _Flaky(nn.Linear):
    """A Linear whose forward output (``where="forward"``) or the gradient its backward hands on
    (``where="backward"``) turns NaN while ``armed``."""

    def __init__(self, d: int, where: str) -> None:
        super().__init__(d, d)
        self.where, self.armed = where, False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x)
        if self.armed and self.where == "forward":
            return y * math.nan
        if self.armed and self.where == "backward":
            y.register_hook(lambda g: g * math.nan)
        return y


def _train_until_nan(where: str, k: int = 3, j: int = 2) -> tuple[Run, str]:
    torch.manual_seed(0)
    mods: list[nn.Module] = []
    for i in range(5):
        mods += [_Flaky(16, where) if i == j else nn.Linear(16, 16), nn.Tanh()]
    model = nn.Sequential(*mods, nn.Linear(16, 3))
    flaky = mods[2 * j]
    name = str(2 * j)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with gg.watch(model, opt, config="full", diagnose_online=False) as mon:
        for step in range(k + 2):
            flaky.armed = step == k  # type: ignore[assignment]
            x, y = torch.randn(32, 16), torch.randint(0, 3, (32,))
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            mon.log(loss=loss)
    return mon.run, name


@pytest.mark.parametrize("where", ["forward", "backward"])
def test_nonfinite_names_where_the_nan_was_born(where: str) -> None:
    # regression (issue 12 item 8, issue 13 item 3): a NaN born in layer j's forward output was
    # blamed on layer '0' (the first layer with a NaN gradient); one born in the backward pass was
    # blamed on the layer farthest from where it appeared
    run, name = _train_until_nan(where)
    f = kinds(diagnose(run))["nonfinite"]
    assert f.steps is not None and f.steps[0] == 3
    assert f.layers == (name,), f.evidence
    assert f.data["origin_pass"] == where
    assert ("forward output of" if where == "forward" else "backward pass") in f.evidence


def test_overflowing_statistic_is_not_reported_as_nan() -> None:
    # regression (issue 12, item 1): gradients up to ~1e25, all finite, overflow the float32 sum
    # of squares to Inf; that was reported as CRITICAL nonfinite, with an untrue cause
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # the weights stay finite
    with gg.watch(model, opt, config="full", diagnose_online=False) as mon:
        for _ in range(6):
            loss = model(torch.randn(32, 16)).square().mean() * 1e25
            opt.zero_grad()
            loss.backward()
            opt.step()
            mon.log(loss=loss)
    run = mon.run
    assert np.isinf(run.metric(GRAD_NORM)[1]).any()  # the statistic overflowed ...
    assert np.isfinite(run.metric(GRAD_MAX)[1]).all()  # ... the values did not
    assert (run.metric(NONFINITE)[1] == 0).all()
    assert "nonfinite" not in kinds(diagnose(run))


def test_nan_activations_are_not_dead_units() -> None:
    # regression (issue 13, item 2): sign(NaN) == 0, so NaN activations counted as zeros and every
    # NaN run with activation detail got a false CRITICAL dead_units
    run, _ = _train_until_nan("forward")
    zero_steps, zero = run.metric(ACT_ZERO_FRAC)
    after = zero[zero_steps >= 3]
    assert np.isnan(after[:, 2:]).all()  # NaN outputs from layer 2 on: no zero count, not 100%
    assert "dead_units" not in kinds(diagnose(run))
    assert "nonfinite" in kinds(diagnose(run))
