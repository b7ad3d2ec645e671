"""Guard: skips NaN/Inf and spiky steps, rolls back, backs the LR off, plays well with GradScaler."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gradguard as gg
from gradguard.errors import GradguardError


def setup(opt_cls=torch.optim.SGD, lr: float = 0.05, **guard_kw):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 1)
    )
    opt = opt_cls(model.parameters(), lr=lr)
    guard = gg.Guard(model, opt, **guard_kw)
    x, y = torch.randn(64, 4), torch.randn(64, 1)
    return model, opt, guard, x, y


def backward(model, opt, x, y) -> torch.Tensor:
    opt.zero_grad()
    loss = F.mse_loss(model(x), y)
    loss.backward()
    return loss


def params(model) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def test_nan_gradient_at_step_k_is_skipped_and_training_goes_on() -> None:
    model, opt, guard, x, y = setup()
    k, results, losses = 5, [], []
    for step in range(12):
        loss = backward(model, opt, x, y)
        losses.append(float(loss.detach()))
        if step == k:
            model[2].weight.grad[3, 4] = float("nan")  # one layer's gradient
            before = params(model)
        results.append(guard.step(loss=loss))
        if step == k:
            for p, b in zip(model.parameters(), before):  # the step was not taken
                assert torch.equal(p.detach(), b)
    assert results == [True] * k + [False] + [True] * (12 - k - 1)
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())
    assert losses[-1] < losses[0]  # it kept training
    (ev,) = guard.events
    assert (ev.step, ev.kind, ev.layer, ev.rolled_back) == (k, "nonfinite_grad", "2", False)
    assert "first in 2" in ev.message and "skipped" in str(ev)
    assert guard.good_steps == 11 and guard.steps == 12


def test_nonfinite_loss_is_skipped() -> None:
    model, opt, guard, x, y = setup()
    backward(model, opt, x, y)
    assert guard.step(loss=torch.tensor(float("inf"))) is False
    assert guard.events[0].kind == "nonfinite_loss" and guard.events[0].loss == float("inf")


def test_rollback_restores_snapshot_and_backs_lr_off_twice() -> None:
    model, opt, guard, x, y = setup(
        opt_cls=torch.optim.Adam, lr=0.01, rollback=True, snapshot_every=5, lr_backoff=0.5
    )
    for step in range(7):
        backward(model, opt, x, y)
        assert guard.step()
        if step == 4:  # 5 good steps: the snapshot
            snap_params = params(model)
            snap_avg = [opt.state[p]["exp_avg"].clone() for p in model.parameters()]
    assert guard.snapshot_step == 5
    assert not all(torch.equal(p, s) for p, s in zip(params(model), snap_params))  # moved on
    for expected_lr in (0.005, 0.0025):
        backward(model, opt, x, y)
        model[0].bias.grad[0] = float("nan")
        assert guard.step() is False
        for p, s in zip(model.parameters(), snap_params):
            assert torch.equal(p.detach(), s)
        for p, s in zip(model.parameters(), snap_avg):  # optimizer state too
            assert torch.equal(opt.state[p]["exp_avg"], s)
        assert opt.param_groups[0]["lr"] == pytest.approx(expected_lr)
        assert guard.events[-1].rolled_back and guard.events[-1].lr == pytest.approx((expected_lr,))
        for _ in range(2):  # Adam updates its state in place: the snapshot must survive it
            backward(model, opt, x, y)
            assert guard.step()


def test_gradient_norm_spike_is_skipped() -> None:
    model, opt, guard, x, y = setup(warmup=10)
    for _ in range(12):
        backward(model, opt, x, y)
        assert guard.step()
    backward(model, opt, x, y)
    for p in model.parameters():
        p.grad.mul_(1e6)
    assert guard.step() is False
    ev = guard.events[-1]
    assert ev.kind == "grad_spike" and ev.z > 10 and ev.grad_norm > 1e3
    backward(model, opt, x, y)
    assert guard.step()  # the next normal step goes through


def test_blow_up_in_the_first_steps_is_caught_by_the_warmup_rule() -> None:
    # regression (issue 12, item 9): with a 20-step warm-up the guard let an explosion in the
    # first 4 steps through; during the warm-up a norm far above the first ones is a spike
    model, opt, guard, x, y = setup()  # warmup=20
    for _ in range(2):
        backward(model, opt, x, y)
        assert guard.step()
    backward(model, opt, x, y)
    for p in model.parameters():
        p.grad.mul_(1e3)
    before = params(model)
    assert guard.step() is False
    ev = guard.events[-1]
    assert ev.kind == "grad_spike" and ev.z is None and "warm-up" in ev.message
    assert all(torch.equal(a, b) for a, b in zip(before, params(model)))  # not applied
    loss = backward(model, opt, x, y)
    assert guard.step(loss)  # a normal step goes through
    backward(model, opt, x, y)
    assert guard.step(loss * 100) is False  # the loss 100x the first one: a loss spike
    assert guard.events[-1].kind == "loss_spike"
    relaxed = gg.Guard(model, opt, warmup_factor=None)  # the old behaviour, on request
    for scale in (1.0, 1e3):
        backward(model, opt, x, y)
        for p in model.parameters():
            p.grad.mul_(scale)
        assert relaxed.step()


def test_first_nonfinite_event_carries_the_location() -> None:
    class Log(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.log(x)

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Sequential(nn.Linear(4, 4), Log()), nn.Linear(4, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    guard = gg.Guard(model, opt, loss_fn=F.mse_loss)
    x, y = torch.randn(8, 3), torch.randn(8, 1)
    loss = backward(model, opt, x, y)
    assert guard.step(loss=loss, batch=(x, y)) is False
    where = guard.events[0].location
    assert where is not None and (where.phase, where.module, where.kind) == (
        "forward",
        "1.1",
        "Log",
    )
    assert "1.1 [Log]" in str(guard.events[0])
    loss = backward(model, opt, x, y)
    guard.step(loss=loss, inputs=x, target=y)
    assert guard.events[1].location is None  # only the first one is replayed


def test_gradscaler_overflow_skip_is_not_counted_twice() -> None:
    model, opt, _, x, y = setup()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    guard = gg.Guard(model, opt, scaler=scaler, warmup=3)

    def scaled_backward() -> torch.Tensor:
        opt.zero_grad()
        loss = F.mse_loss(model(x), y)
        scaler.scale(loss).backward()
        return loss

    for _ in range(4):
        loss = scaled_backward()
        assert guard.step(loss=loss)
    assert scaler.get_scale() == 2.0**10
    loss = scaled_backward()
    model[0].weight.grad[0, 0] = float("inf")  # an fp16-style overflow: the scaler's business
    before = params(model)
    assert guard.step(loss=loss) is False
    assert scaler.get_scale() == 2.0**9  # the scaler backed off ...
    assert guard.events == [] and guard.scaler_skips == 1  # ... and the guard stayed quiet
    assert all(torch.equal(p.detach(), b) for p, b in zip(model.parameters(), before))
    loss = scaled_backward()
    scaler.unscale_(opt)  # the user may unscale first (e.g. to clip)
    for p in model.parameters():
        p.grad.mul_(1e6)
    assert guard.step(loss=loss) is False  # a spike the scaler cannot see: the guard's event
    assert [e.kind for e in guard.events] == ["grad_spike"]
    assert scaler.get_scale() == 2.0**9
    loss = scaled_backward()
    assert guard.step(loss=loss)


def _amp_setup(**guard_kw):
    model, opt, _, x, y = setup()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    guard = gg.Guard(model, opt, scaler=scaler, warmup=3, **guard_kw)

    def scaled_backward(loss_scale: float = 1.0) -> torch.Tensor:
        opt.zero_grad()
        loss = F.mse_loss(model(x), y) * loss_scale
        scaler.scale(loss).backward()
        return loss

    return model, opt, scaler, guard, scaled_backward


@pytest.mark.parametrize("bad", [float("inf"), float("nan")])
def test_gradscaler_skip_with_nonfinite_loss_is_not_counted_twice(bad: float) -> None:
    """fp16 overflow in the forward: the loss itself is inf/NaN, so are the scaled grads."""
    model, opt, scaler, guard, scaled_backward = _amp_setup(rollback=True, lr_backoff=0.5)
    for _ in range(3):
        assert guard.step(loss=scaled_backward())
    before = params(model)
    loss = scaled_backward(loss_scale=bad)  # inf * loss (or NaN): non-finite loss and grads
    assert not torch.isfinite(loss)
    assert guard.step(loss=loss) is False
    assert scaler.get_scale() == 2.0**9  # the scaler backed off once ...
    assert guard.events == [] and guard.scaler_skips == 1  # ... and the guard stayed quiet
    assert opt.param_groups[0]["lr"] == 0.05  # no rollback backoff for the scaler's own skip
    assert all(torch.equal(p.detach(), b) for p, b in zip(model.parameters(), before))
    assert guard.step(loss=scaled_backward())  # and training goes on


def test_nonfinite_loss_with_finite_grads_under_a_scaler_is_the_guards_event() -> None:
    model, opt, scaler, guard, scaled_backward = _amp_setup()
    scaled_backward()  # finite gradients: the scaler would step
    assert guard.step(loss=torch.tensor(float("nan"))) is False
    assert [e.kind for e in guard.events] == ["nonfinite_loss"] and guard.scaler_skips == 0
    assert scaler.get_scale() == 2.0**10


class _SyncCounter:
    def __init__(self, monkeypatch) -> None:
        self.calls: list[str] = []
        for name in ("item", "tolist", "__bool__", "__float__", "__int__", "cpu", "numpy"):
            orig = getattr(torch.Tensor, name)

            def counted(t, *a, _orig=orig, _name=name, **k):
                self.calls.append(_name)
                return _orig(t, *a, **k)

            monkeypatch.setattr(torch.Tensor, name, counted)


@pytest.mark.parametrize("amp", [False, True])
def test_one_host_read_per_good_step(monkeypatch, amp: bool) -> None:
    """One host read per good step, GradScaler's overflow check included."""
    if amp:
        model, opt, scaler, guard, backward_fn = _amp_setup()
    else:
        model, opt, guard, x, y = setup()
        scaler = None

        def backward_fn() -> torch.Tensor:
            return backward(model, opt, x, y)

    assert guard.step(loss=backward_fn())  # warm
    counter = _SyncCounter(monkeypatch)
    for _ in range(4):
        loss = backward_fn()
        counter.calls.clear()
        assert guard.step(loss=loss)
        assert counter.calls == ["tolist"]
    monkeypatch.undo()
    if scaler is not None:
        assert scaler.get_scale() == 2.0**10 and guard.scaler_skips == 0
    assert guard.good_steps == 5 and guard.events == []


def test_gradscaler_driven_by_the_guard_trains_like_scaler_step() -> None:
    """guard.step() (own overflow read, optimizer.step + update) == scaler.step + update."""
    runs = []
    for use_guard in (True, False):
        model, opt, scaler, guard, scaled_backward = _amp_setup()
        for step in range(6):
            loss = scaled_backward()
            if step == 2:
                model[2].weight.grad[0, 0] = float("inf")
            if use_guard:
                guard.step(loss=loss)
            else:
                scaler.step(opt)
                scaler.update()
        runs.append((params(model), scaler.get_scale(), scaler._get_growth_tracker()))
    (pa, sa, ga), (pb, sb, gb) = runs
    assert (sa, ga) == (sb, gb) == (2.0**9, 3)
    for a, b in zip(pa, pb):
        torch.testing.assert_close(a, b)


def test_lr_backoff_without_rollback() -> None:
    model, opt, guard, x, y = setup(lr_backoff=0.5)  # rollback=False
    backward(model, opt, x, y)
    assert guard.step()
    moved = params(model)
    backward(model, opt, x, y)
    model[0].weight.grad[0, 0] = float("nan")
    assert guard.step() is False
    assert opt.param_groups[0]["lr"] == pytest.approx(0.025)
    ev = guard.events[-1]
    assert not ev.rolled_back and ev.lr == pytest.approx((0.025,))
    assert "lr now 0.025" in str(ev) and "rolled back" not in str(ev)
    assert all(torch.equal(p.detach(), m) for p, m in zip(model.parameters(), moved))  # no rollback


def test_default_lr_backoff_is_off_without_rollback_and_half_with_it() -> None:
    for rollback, lr in ((False, 0.05), (True, 0.025)):
        model, opt, guard, x, y = setup(rollback=rollback)
        backward(model, opt, x, y)
        model[0].weight.grad[0, 0] = float("nan")
        assert guard.step() is False
        assert opt.param_groups[0]["lr"] == pytest.approx(lr)
        assert guard.events[-1].lr == (None if not rollback else pytest.approx((lr,)))


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"model": "net"}, "pass the model"),
        ({"optimizer": "sgd"}, "torch.optim.SGD"),
        ({"max_norm_z": -1.0}, "max_norm_z"),
        ({"lr_backoff": 2.0}, "lr_backoff"),
        ({"snapshot_every": 0}, "snapshot_every"),
        ({"scaler": object()}, "GradScaler"),
        ({"loss_fn": "mse"}, "callable"),
    ],
)
def test_bad_input_names_the_fix(kw, match) -> None:
    model = nn.Linear(2, 1)
    args = {"model": model, "optimizer": torch.optim.SGD(model.parameters(), lr=0.1)}
    args.update({k: kw.pop(k) for k in list(kw) if k in args})
    with pytest.raises(GradguardError, match=match):
        gg.Guard(args["model"], args["optimizer"], **kw)
    guard = gg.Guard(model, torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(GradguardError, match="inputs, target"):
        guard.step(batch=torch.ones(2))
    with pytest.raises(GradguardError, match="pass the loss tensor"):
        guard.step(loss="0.3")


def test_watch_with_guard_records_the_skip_event() -> None:
    model, opt, guard, x, y = setup()
    with gg.watch(model, opt, guard=guard) as mon:
        for step in range(6):
            loss = backward(model, opt, x, y)
            if step == 3:
                model[4].weight.grad[0, 0] = float("nan")
            guard.step(loss=loss)
            mon.log(loss=loss)
        mon.flush()
        run = mon.run
    skips = [e for e in run.events if e.kind == "guard_skip"]
    assert len(skips) == 1
    (ev,) = skips
    assert ev.step == 3 and ev.layer == "4" and ev.data["reason"] == "nonfinite_grad"
    assert mon.step_count == 6  # the skipped call is a step too (marked skipped)
    assert run.skipped == {3: "nonfinite_grad"}
