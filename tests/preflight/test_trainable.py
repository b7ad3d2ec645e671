"""report.trainable: the signals against independent numpy references, and verdicts on digits nets
whose outcome was measured by training (benchmarks/trainability.py)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

import gradguard as gg
from gradguard.lab.data import digits
from gradguard.preflight import _calibration as cal
from gradguard.preflight.trainable import (
    FEATURES,
    PROBE_FEATURES,
    Trainability,
    signals,
    verdict,
)


def mlp(depth: int, act: type[nn.Module], sw2: float | None = None) -> nn.Sequential:
    torch.manual_seed(0)
    mods: list[nn.Module] = []
    for i in range(depth):
        lin = nn.Linear(64 if i == 0 else 32, 32)
        if sw2 is not None:
            nn.init.normal_(lin.weight, 0.0, math.sqrt(sw2 / lin.in_features))
            nn.init.zeros_(lin.bias)
        mods += [lin, act()]
    return nn.Sequential(*mods, nn.Linear(32, 10))


@pytest.fixture(scope="module")
def batch() -> torch.Tensor:
    return digits().x_train[:64]


@pytest.mark.parametrize(("model", "names"), [(cal.STATIC, FEATURES), (cal.PROBE, PROBE_FEATURES)])
def test_calibration_covers_every_signal(model, names, batch) -> None:
    # signals() computes exactly the named features (probe: only with probe_steps)
    assert set(gg.check(mlp(3, nn.ReLU), batch).trainability.numbers) == set(FEATURES)
    assert len(model["mean"]) == len(model["scale"]) == len(model["weights"]) == len(names)
    assert 0.0 < model["threshold"] < 1.0


def test_signals_against_numpy(batch: torch.Tensor) -> None:
    model = mlp(6, nn.Tanh, sw2=1.5)
    report = gg.check(model, batch)
    n = report.trainability.numbers
    with torch.no_grad():
        y = model(batch).double().numpy()  # (64, 10)
    x = batch.double().numpy()  # (64, 64)
    # spread: sum ||y_i - mean||^2 / sum ||y_i||^2
    spread = ((y - y.mean(0)) ** 2).sum() / (y**2).sum()
    assert n["collapse"] == pytest.approx(-math.log10(spread), rel=1e-6)

    def cosines(z: np.ndarray) -> np.ndarray:
        c = z - z.mean(0)
        c = c / np.linalg.norm(c, axis=1, keepdims=True)
        g = c @ c.T
        return g[np.triu_indices(len(z), 1)]

    r = np.corrcoef(cosines(x), cosines(y))[0, 1]
    assert n["scramble"] == pytest.approx(1.0 - r, abs=1e-6)
    lgr = math.log10(report.grad_ratio)
    assert n["vanish"] == pytest.approx(max(0.0, -lgr)) and n["explode"] == pytest.approx(
        max(0.0, lgr)
    )
    qs = [row.q for row in report.layers]
    lq = math.log10(qs[-2] / qs[0])  # last hidden layer over the first
    assert n["q_growth"] - n["q_decay"] == pytest.approx(lq)
    assert n["saturation"] == pytest.approx(
        max(row.sat_frac for row in report.layers if math.isfinite(row.sat_frac))
    )
    assert n["jacobian"] == pytest.approx(abs(math.log10(report.jacobian.mean_sq_singular_value)))
    assert n["log_depth"] == pytest.approx(math.log2(7))


def test_collapsed_outputs_read_as_collapse() -> None:
    rows: list = []
    x = torch.randn(16, 8)
    same = torch.ones(16, 3) + 1e-9 * torch.randn(16, 3)
    out = signals(rows, grad_ratio=1.0, inputs=x, output=same, jacobian_msv=None)
    assert out["collapse"] > 15  # spread ~1e-18
    kept = signals(rows, grad_ratio=1.0, inputs=x, output=x * 3.0, jacobian_msv=None)
    assert kept["scramble"] == pytest.approx(0.0, abs=1e-9)  # a scaled copy keeps every cosine
    assert math.isnan(kept["jacobian"]) and kept["vanish"] == 0.0


@pytest.mark.parametrize(
    ("depth", "act", "sw2", "trains"),
    [
        (4, nn.ReLU, 2.0, True),  # He, shallow: trains to ~95% in 200 steps
        (4, nn.Tanh, 1.0, True),
        (48, nn.Sigmoid, None, False),  # PyTorch default, deep sigmoid: stuck at chance
        (24, nn.ReLU, 16.0, False),  # q grows x8 per layer
        (48, nn.Tanh, 16.0, False),  # deep in the chaotic phase
    ],
)
def test_verdict_on_measured_nets(batch, depth, act, sw2, trains) -> None:
    report = gg.check(mlp(depth, act, sw2), batch)
    assert report.trainable is trains
    assert 0.5 <= report.confidence <= 1.0
    assert report.trainability.reasons
    if not trains:
        assert report.confidence > 0.9


def test_nonfinite_is_untrainable_outright() -> None:
    t = verdict({f: 0.0 for f in FEATURES}, nonfinite=3)
    assert t == Trainability(False, 1.0, 0.0, t.reasons, t.numbers)
    assert "3 non-finite" in t.reasons[0]


def test_report_shows_and_serialises_the_verdict(batch) -> None:
    report = gg.check(mlp(48, nn.Sigmoid), batch)
    text = str(report)
    assert "trainable: no (confidence" in text and "why it will not train:" in text
    d = json.loads(json.dumps(report.to_dict()))
    assert d["trainability"]["trainable"] is False
    assert set(d["trainability"]["numbers"]) == set(FEATURES)
    assert d["trainability"]["probability"] == pytest.approx(report.trainability.probability)


def test_signals_read_the_logits_of_a_dict_output() -> None:
    x = torch.randn(16, 8)
    plain = signals([], grad_ratio=1.0, inputs=x, output=x * 2.0, jacobian_msv=None)
    wrapped = signals([], grad_ratio=1.0, inputs=x, output={"logits": x * 2.0}, jacobian_msv=None)
    assert wrapped["scramble"] == pytest.approx(plain["scramble"])
    assert wrapped["collapse"] == pytest.approx(plain["collapse"])
    tokens = signals(
        [], grad_ratio=1.0, inputs=torch.arange(16).view(16, 1), output=x, jacobian_msv=None
    )
    assert math.isnan(tokens["scramble"])  # integer inputs have no cosines
