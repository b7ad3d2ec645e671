"""The overhead budget: the controller against simulated costs, and wired into gg.watch."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import gradguard as gg
from gradguard.errors import ConfigError
from gradguard.record.budget import ADJUST_EVERY, MAX_RECORD_PERIOD, SCHEDULE, Adaptive, Budget


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def simulate(
    fraction: float,
    steps: int = 500,
    *,
    bare: float = 0.040,
    rec: float = 0.0012,
    detail: float = 0.010,
    flush: float = 0.015,
    flush_every: int = 100,
    jitter: float = 0.0,
    seed: int = 0,
    pause_every: int = 0,
    pause: float = 0.0,
) -> tuple[Budget, float, list[tuple[int, int]]]:
    """Drive a Budget with known costs; returns it, the true overhead over the run, the plans."""
    rng = np.random.default_rng(seed)
    clock = FakeClock()
    b = Budget(fraction, flush_every, clock=clock)
    clock.t = 1.0
    b.end_step(next_step=0)  # the first step boundary
    ours = bare_sum = 0.0
    recorded = 0
    plans = []
    for s in range(steps):
        noise = 1 + jitter * rng.standard_normal()
        r, d = b.record(s), b.detail(s)
        b.mark(recorded=r, detail=d)
        cost = (rec if r else 0.0) + (detail if d else 0.0)
        cost *= noise
        b.add(cost)
        step = bare * (1 + jitter * rng.standard_normal()) + cost
        recorded += r
        if r and recorded % flush_every == 0:
            b.add_flush(flush)
            step += flush
            cost += flush
        ours += cost
        bare_sum += step - cost
        clock.t += step
        if pause_every and s % pause_every == pause_every - 1:
            clock.t += pause  # not training: evaluation, a checkpoint, another program's turn
        adjusting = len(b._win.bare) + 1 >= ADJUST_EVERY
        b.end_step(next_step=s + 1)
        if adjusting:
            plans.append((b.record.period, b.detail.period))
    return b, ours / bare_sum, plans


@pytest.mark.parametrize("fraction", [0.02, 0.03, 0.05, 0.10])
def test_overhead_over_500_steps_is_within_a_point_of_the_budget(fraction: float) -> None:
    b, true, _ = simulate(fraction, jitter=0.1)
    assert abs(true - fraction) <= 0.01, true
    assert b.overhead() == pytest.approx(true, rel=0.05)  # what the budget measured is the truth
    assert not b.floor_hit


def test_pauses_between_steps_do_not_make_watching_look_cheap() -> None:
    # a 2 s pause every 40 steps (50x a step) is not training time: counting it as step time made
    # the budget think its work cost ~1% and ask for a detail step every step
    b, true, _ = simulate(0.03, jitter=0.1, pause_every=40, pause=2.0)
    assert abs(true - 0.03) <= 0.01, true
    assert b.bare == pytest.approx(0.040, rel=0.1)


def test_detail_steps_are_spaced_before_recorded_steps_are_thinned() -> None:
    # every-step statistics cost 1.2 / 40 = 3%: a 5% budget keeps every step recorded
    _, _, plans = simulate(0.05)
    assert all(r == 1 for r, _ in plans[-10:])
    assert all(d > 10 for _, d in plans[-10:])
    # a 2% budget must thin the recorded steps as well, never beyond the rules' floor
    _, _, plans = simulate(0.02)
    assert all(1 < r <= MAX_RECORD_PERIOD for r, _ in plans[-10:])


def test_a_budget_out_of_reach_stays_at_the_rules_floor_and_says_so() -> None:
    b, _, plans = simulate(0.001)
    assert b.floor_hit
    assert plans[-1] == (MAX_RECORD_PERIOD, 100 * MAX_RECORD_PERIOD)  # one detail step per flush
    assert b.state()["floor"] is True


def test_a_generous_budget_records_everything_every_step() -> None:
    _, _, plans = simulate(0.9, detail=0.004)
    assert plans[-1] == (1, 1)


def test_overspending_early_is_paid_back() -> None:
    # the default schedule (detail every 10) costs 5.5% at first; the run still ends near 3%
    b, true, _ = simulate(0.03, steps=1000)
    assert abs(true - 0.03) <= 0.005


def test_adaptive_schedule_restarts_at_the_step_it_changes() -> None:
    s = Adaptive(period=3)
    assert [k for k in range(10) if s(k)] == [0, 3, 6, 9]
    s.set(4, from_step=5)
    assert [k for k in range(5, 15) if s(k)] == [5, 9, 13]
    s.set(4, from_step=7)  # same period: the phase is kept
    assert s(9) and not s(7)


@pytest.mark.parametrize("bad", [0, 1, 1.5, -0.1, True, "2%"])
def test_bad_budget_is_a_config_error(bad: object) -> None:
    with pytest.raises(ConfigError, match="budget"):
        gg.watch(nn.Linear(2, 2), budget=bad)


def test_watch_with_a_budget_stores_its_schedules(tmp_path: Path) -> None:
    # a slow step (a sleep stands in for the data pipeline) and a tiny model: watching costs far
    # under 50%, so the budget records every step and asks for a detail step every step

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 2)
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with gg.watch(model, opt, budget=0.5, store=tmp_path / "b.db", flush_every=20) as mon:
        for _ in range(4 * ADJUST_EVERY):
            x = torch.randn(8, 8)
            loss = model(x).square().mean()
            opt.zero_grad()
            loss.backward()
            time.sleep(0.02)
            opt.step()
            mon.log(loss=loss)
    run = gg.load(tmp_path / "b.db")  # read back from the store
    events = [e for e in run.events if e.kind == SCHEDULE]
    assert events, "the schedule the budget chose is in the store"
    assert events[0].data["detail_every"] == 1 and events[0].data["record_every"] == 1
    final = events[-1]
    assert "over the run" in final.message
    assert 0 < final.data["overhead_so_far"] < 0.5
    assert mon.run_config["watch"]["budget"] == 0.5
    # every step recorded, a detail step at every step once the budget chose it
    assert len(run.metric("grad_norm")[0]) == 4 * ADJUST_EVERY
    act_steps = run.metric("act_std")[0]
    assert set(range(ADJUST_EVERY + 1, 4 * ADJUST_EVERY)) <= set(act_steps.tolist())
    assert math.isfinite(mon.budget.overhead())
