"""The fault matrix, how gg.watch is used: under torch.compile, two watches at once, a watch closed
and opened again on the same model, and a model without parameters."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import gradguard as gg
from gradguard.errors import GradguardError
from gradguard.metrics import GRAD_NORM, LOSS
from tests.faults.harness import STEPS, Case, check_row, mlp3, serious
from tests.faults.matrix import fault, register

register(
    "watch",
    "torch.compile (backend 'eager': dynamo traces, no code generation)",
    "mlp3",
    1,
    "(a) same numbers (b) store complete (d) no warning+",
)


def test_torch_compile(tmp_path: Path) -> None:
    case = Case(wrap=lambda m: torch.compile(m, backend="eager"))
    check_row(case, None, tmp_path)


def batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [
        (torch.randn(16, 4, generator=g), torch.randn(16, 2, generator=g)) for _ in range(STEPS)
    ]


def plain_losses() -> tuple[list[float], list[torch.Tensor]]:
    torch.manual_seed(0)
    model = mlp3()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    losses = []
    for x, y in batches():
        opt.zero_grad()
        loss = F.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        losses.append(float(loss))
    return losses, [p.detach().clone() for p in model.parameters()]


@fault(
    "two watches on one model at once",
    kind="watch",
    models="mlp3",
    checks="(a) same numbers (b) both stores complete and equal (d) no warning+",
)
def test_nested_watch(tmp_path: Path) -> None:
    want, weights = plain_losses()
    torch.manual_seed(0)
    model = mlp3()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    losses = []
    outer = gg.watch(model, opt, store=tmp_path / "outer.db", detail_every=1)
    with outer, gg.watch(model, opt, store=tmp_path / "inner.db", detail_every=1) as inner:
        for x, y in batches():
            opt.zero_grad()
            loss = F.mse_loss(model(x), y)
            loss.backward()
            opt.step()
            losses.append(float(loss))
            outer.log(loss=loss)
            inner.log(loss=loss)
    assert losses == want
    assert all(torch.equal(p, w) for p, w in zip(model.parameters(), weights))
    a, b = gg.load(tmp_path / "outer.db"), gg.load(tmp_path / "inner.db")
    assert a.scalar(LOSS)[0].tolist() == list(range(STEPS))
    for name in a.metric_names:
        np.testing.assert_array_equal(a.metric(name)[1], b.metric(name)[1])
    assert a.metric(GRAD_NORM)[0].tolist() == list(range(STEPS))
    assert not serious(gg.diagnose(a))


@fault(
    "watch closed and opened again (two runs in one store)",
    kind="watch",
    models="mlp3",
    checks="(a) same numbers (b) both runs complete (d) no warning+",
)
def test_repeated_watch(tmp_path: Path) -> None:
    want, weights = plain_losses()
    torch.manual_seed(0)
    model = mlp3()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    losses = []
    data = batches()
    store = tmp_path / "s.db"
    for part, name in ((data[:3], "first"), (data[3:], "second")):
        with gg.watch(model, opt, store=store, name=name, detail_every=1) as mon:
            for x, y in part:
                opt.zero_grad()
                loss = F.mse_loss(model(x), y)
                loss.backward()
                opt.step()
                losses.append(float(loss))
                mon.log(loss=loss)
        assert not model._forward_hooks and not model._forward_pre_hooks  # all hooks gone
    assert losses == want
    assert all(torch.equal(p, w) for p, w in zip(model.parameters(), weights))
    for name in ("first", "second"):
        run = gg.load(store, name)
        assert run.metric(GRAD_NORM)[0].tolist() == [0, 1, 2]
        assert run.scalar(LOSS)[0].tolist() == [0, 1, 2]
        assert not serious(gg.diagnose(run))


@fault(
    "a model without parameters",
    kind="watch",
    models="nn.Sequential(nn.ReLU())",
    checks="a GradguardError naming the fix; no hook left",
)
def test_model_without_parameters_is_a_clear_error() -> None:
    model = torch.nn.Sequential(torch.nn.ReLU())
    with pytest.raises(GradguardError, match="parameters"):
        gg.watch(model)
    assert not model._forward_pre_hooks
