"""Skipped optimizer calls (GradScaler overflow, gg.Guard) keep their step number, their logged
values and a mark with the reason, in memory and in the store (issue 13, item 6)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import gradguard as gg
from gradguard.errors import GradguardError
from gradguard.metrics import ACT_MEAN, GRAD_NORM, LOSS
from tests.fixtures.models import mlp

OVERFLOW_AT = {2, 3, 7, 11, 12, 13, 17, 19, 20, 23, 24, 27, 28}  # 13 of 30, as in the issue


def amp_loop(
    watched: bool, tmp_path: Path | None = None, steps: int = 30
) -> tuple[list[float], list[torch.Tensor], gg.Run | None]:
    """A GradScaler loop on CPU whose scaled gradients overflow at OVERFLOW_AT; returns the losses,
    the final weights and (watched) the run read back from the store."""
    torch.manual_seed(0)
    model = mlp(depth=3, width=8, d_in=4, d_out=2)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8, growth_interval=1000)
    x, y = torch.randn(16, 4), torch.randn(16, 2)
    store = None if tmp_path is None else tmp_path / "amp.db"
    mon = gg.watch(model, opt, scaler=scaler, store=store, flush_every=7) if watched else None
    losses = []
    for i in range(steps):
        opt.zero_grad()
        loss = F.mse_loss(model(x), y) * (1 + 0.01 * i)  # a distinct loss per iteration
        scaler.scale(loss).backward()
        if i in OVERFLOW_AT:
            model[2].weight.grad[0, 0] = float("inf")  # what an fp16 overflow leaves
        scaler.step(opt)
        scaler.update()
        losses.append(float(loss.detach()))
        if mon is not None:
            mon.log(loss=loss)
    run = None
    if mon is not None:
        mon.close()
        run = gg.load(store) if store is not None else mon.run
    return losses, [p.detach().clone() for p in model.parameters()], run


def test_scaler_skips_keep_their_step_and_their_loss(tmp_path: Path) -> None:
    plain_losses, plain_weights, _ = amp_loop(watched=False)
    losses, weights, run = amp_loop(watched=True, tmp_path=tmp_path)
    assert run is not None
    # the training is the same with and without gradguard
    assert losses == plain_losses
    assert all(torch.equal(a, b) for a, b in zip(weights, plain_weights))
    # every optimizer call is a step: 30 losses at steps 0..29, none averaged into another
    steps, vals = run.scalar(LOSS)
    assert steps.tolist() == list(range(30))
    np.testing.assert_allclose(vals, losses, rtol=1e-6)
    # the skipped ones are marked, with the reason, and have no per-layer rows
    assert run.skipped == {s: "scaler_overflow" for s in sorted(OVERFLOW_AT)}
    assert sorted(set(range(30)) - OVERFLOW_AT) == run.metric(GRAD_NORM)[0].tolist()
    skips = [e for e in run.events if e.kind == "scaler_skip"]
    assert [e.step for e in skips] == sorted(OVERFLOW_AT)
    assert skips[0].data["scale"] == 2.0**8  # the scale that overflowed
    assert skips[1].data["scale"] == 2.0**7  # ... backed off once


def test_scaler_watch_is_removed_on_close() -> None:
    model = mlp(depth=2, width=4, d_in=3, d_out=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu")
    with gg.watch(model, opt, scaler=scaler):
        assert "step" in vars(scaler)
    assert "step" not in vars(scaler)  # the class's own method again


@pytest.mark.parametrize(
    ("kw", "match"),
    [({"scaler": object()}, "GradScaler"), ({"scaler": "yes"}, "GradScaler")],
)
def test_bad_scaler_is_a_clear_error(kw: dict, match: str) -> None:
    model = mlp(depth=2, width=4, d_in=3, d_out=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(GradguardError, match=match):
        gg.watch(model, opt, **kw)
    with pytest.raises(GradguardError, match="needs the optimizer"):
        gg.watch(model, scaler=torch.amp.GradScaler("cpu"))


def test_guard_skip_keeps_the_step_number_and_the_loss_in_the_store(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = mlp(depth=3, width=8, d_in=4, d_out=2)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    guard = gg.Guard(model, opt)
    x, y = torch.randn(16, 4), torch.randn(16, 2)
    store = tmp_path / "guard.db"
    losses = []
    with gg.watch(model, opt, guard=guard, store=store, detail_every=1) as mon:
        for i in range(8):
            opt.zero_grad()
            loss = F.mse_loss(model(x), y)
            loss.backward()
            if i == 4:
                model[0].weight.grad[1, 1] = float("nan")
            guard.step(loss=loss)
            mon.log(loss=loss)
            losses.append(float(loss.detach()))
    run = gg.load(store)
    assert mon.step_count == 8
    assert run.skipped == {4: "nonfinite_grad"}
    assert run.scalar(LOSS)[0].tolist() == list(range(8))
    np.testing.assert_allclose(run.scalar(LOSS)[1], losses, rtol=1e-6)
    # a detail step that was skipped has no activation or update rows; the others have them
    assert run.metric(ACT_MEAN)[0].tolist() == [0, 1, 2, 3, 5, 6, 7]
    assert set(run.steps.tolist()) == set(range(8)) - {4}


def test_skip_after_take_gradients_now_drops_the_rows() -> None:
    """A trainer that read the gradients before the step (take_gradients_now), then skipped it."""
    model = mlp(depth=2, width=4, d_in=3, d_out=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(5, 3), torch.randn(5, 1)
    with gg.watch(model, opt) as mon:
        for i in range(3):
            opt.zero_grad()
            F.mse_loss(model(x), y).backward()
            mon.take_gradients_now()
            if i == 1:
                mon.mark_skipped("scaler_skip", "overflow", data={"reason": "scaler_overflow"})
            else:
                opt.step()
        mon.flush()
        run = mon.run
    assert run.metric(GRAD_NORM)[0].tolist() == [0, 2]
    assert run.skipped == {1: "scaler_overflow"}


def test_guard_reports_its_scalers_skips() -> None:
    """gg.Guard driving a GradScaler: the scaler's overflow is a scaler_skip at its step, the
    Guard's own refusal a guard_skip, both keeping their step numbers."""
    torch.manual_seed(2)
    model = mlp(depth=3, width=8, d_in=4, d_out=2)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    guard = gg.Guard(model, opt, scaler=scaler)
    x, y = torch.randn(16, 4), torch.randn(16, 2)
    with gg.watch(model, opt, guard=guard) as mon:
        for i in range(6):
            opt.zero_grad()
            loss = F.mse_loss(model(x), y)
            scaler.scale(loss).backward()
            if i == 2:
                model[2].weight.grad[0, 0] = float("inf")  # the scaler's overflow
            guard.step(loss=torch.tensor(float("nan")) if i == 4 else loss)  # the guard's
            mon.log(loss=loss)
        mon.flush()
        run = mon.run
    assert run.skipped == {2: "scaler_overflow", 4: "nonfinite_loss"}
    assert guard.scaler_skips == 1 and len(guard.events) == 1
    assert run.scalar(LOSS)[0].tolist() == list(range(6))
    (ev,) = [e for e in run.events if e.kind == "scaler_skip"]
    assert ev.data["scale"] == 2.0**8
