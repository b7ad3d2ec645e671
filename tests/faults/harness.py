"""The fault suite's training loop: the same tiny run with and without gradguard, a fault injected
at one step, and what the row asserts.

A :class:`Case` builds a model, an optimizer and the batches, and may hook into the loop (the
input, a layer's forward output, a gradient, the loss, the step). :func:`train` runs it plainly or
watched; :func:`check_row` asserts (a) the same losses and weights as without gradguard, (b) the
store holds every flushed row (each optimizer step's loss and every step's per-layer rows but the
skipped ones), (c) the expected finding names the step and layer, (d) no other warning-or-worse
finding, offline (``gg.diagnose``) or online (``finding:<kind>`` events recorded during the run).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import gradguard as gg
from gradguard.diagnosis.finding import Finding, Severity
from gradguard.metrics import GRAD_NORM, LOSS

__all__ = ["Case", "Expect", "Result", "train", "check_row", "mlp3", "same"]

STEPS = 6
FAULT_STEP = 3


def mlp3() -> nn.Module:
    """Linear(4, 8) - Tanh - Linear(8, 8) - Tanh - Linear(8, 2): layers '0', '2', '4'."""
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 2))


@dataclass(frozen=True)
class Expect:
    """The finding a row must produce: its kind ("*": any kind), first step, layer and origin pass
    (None: any)."""

    kind: str
    step: int | None = None
    layer: str | None = None
    origin: str | None = None


@dataclass
class Case:
    """One fault: the model, optimizer, data and where the fault goes in."""

    model: Callable[[], nn.Module] = mlp3
    optimizer: Callable[[nn.Module], torch.optim.Optimizer] = lambda m: torch.optim.SGD(
        m.parameters(), lr=0.05
    )
    batch: Callable[[int], tuple[Any, torch.Tensor]] = lambda s: (
        torch.randn(16, 4, generator=torch.Generator().manual_seed(s)),
        torch.randn(16, 2, generator=torch.Generator().manual_seed(100 + s)),
    )
    loss_of: Callable[[Any, torch.Tensor], torch.Tensor] = lambda out, y: F.mse_loss(out, y)
    steps: int = STEPS
    # hooks: each gets the step number
    on_input: Callable[[int, Any], Any] | None = None
    on_model: Callable[[nn.Module], None] | None = None  # once, after the model is built
    on_loss: Callable[[int, torch.Tensor], torch.Tensor] | None = None
    on_grads: Callable[[int, nn.Module], None] | None = None
    # None: a plain optimizer.step(); else (model, optimizer) -> step(loss, step) plus the watch
    # options it needs (scaler=, guard=)
    stepper: Callable[[nn.Module, torch.optim.Optimizer], tuple[Any, dict[str, Any]]] | None = None
    autocast: torch.dtype | None = None
    watch: dict[str, Any] = field(default_factory=dict)
    wrap: Callable[[nn.Module], nn.Module] | None = None  # e.g. torch.compile


@dataclass
class Result:
    losses: list[float]
    weights: list[torch.Tensor]
    run: gg.Run | None = None
    mem: gg.Run | None = None
    monitor: Any = None


def train(case: Case, *, store: Path | None = None, watched: bool = True) -> Result:
    """Run ``case`` for ``case.steps`` steps; with ``watched`` under gg.watch (detail every step)."""
    torch.manual_seed(0)
    model = case.model()
    if case.on_model is not None:
        case.on_model(model)
    opt = case.optimizer(model)
    step_fn, extra = (None, {}) if case.stepper is None else case.stepper(model, opt)
    mon = None
    if watched:
        opts = {"detail_every": 1, "flush_every": 4, **case.watch, **extra}
        mon = gg.watch(model, opt, store=store, **opts)
    run_model = case.wrap(model) if case.wrap is not None else model
    losses = []
    try:
        for s in range(case.steps):
            x, y = case.batch(s)
            if case.on_input is not None:
                x = case.on_input(s, x)
            opt.zero_grad()
            if case.autocast is not None:
                with torch.autocast("cpu", dtype=case.autocast):
                    out = run_model(x)
                    loss = case.loss_of(out, y)
                loss = loss.float()
            else:
                loss = case.loss_of(run_model(x), y)
            if case.on_loss is not None:
                loss = case.on_loss(s, loss)
            if step_fn is None:
                loss.backward()
                if case.on_grads is not None:
                    case.on_grads(s, model)
                opt.step()
            else:
                step_fn(loss, s)
            losses.append(float(loss.detach()))
            if mon is not None:
                mon.log(loss=loss)
    finally:
        if mon is not None:
            mon.close()
    weights = [p.detach().clone() for p in model.parameters()]
    res = Result(losses, weights, monitor=mon)
    if mon is not None:
        res.mem = mon.run
        res.run = gg.load(store) if store is not None else mon.run
    return res


def same(a: Result, b: Result) -> bool:
    """Bit for bit the same losses and weights (NaN equal to NaN)."""
    if not np.array_equal(np.asarray(a.losses), np.asarray(b.losses), equal_nan=True):
        return False
    return all(
        x.shape == y.shape and np.array_equal(x.float().numpy(), y.float().numpy(), equal_nan=True)
        for x, y in zip(a.weights, b.weights)
    )


def serious(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity >= Severity.WARNING]


def check_row(
    case: Case, expect: Expect | None, tmp_path: Path, allow: set[str] = frozenset()
) -> list[Finding]:
    """Assert (a)-(d) for one row; return the findings (for the caller's own checks). ``allow``:
    kinds that may accompany the expected one (the same fault seen by two rules)."""
    plain = train(case, watched=False)
    store = tmp_path / "run.db"
    got = train(case, store=store)
    assert got.run is not None
    # (a) the loop ran to its end with the same numbers as without gradguard
    assert len(got.losses) == case.steps
    assert same(plain, got), "gradguard changed the training"
    # (b) every flushed row is in the store: every step's loss, per-layer rows of every step
    # that was taken, and the store says what memory says
    run = got.run
    steps = list(range(case.steps))
    assert run.scalar(LOSS)[0].tolist() == steps
    np.testing.assert_array_equal(run.scalar(LOSS)[1], np.asarray(got.losses, dtype=np.float64))
    taken = [s for s in steps if s not in run.skipped]
    assert run.metric(GRAD_NORM)[0].tolist() == taken
    mem = got.mem
    assert mem is not None
    for name in mem.metric_names:
        np.testing.assert_array_equal(run.metric(name)[0], mem.metric(name)[0])
        np.testing.assert_array_equal(run.metric(name)[1], mem.metric(name)[1])
    # (c) the right finding, naming the right step and layer; (d) nothing else at warning+
    findings = gg.diagnose(run)
    bad = serious(findings)
    # online diagnosis' findings (stored as finding:<kind> events) count too
    online = {
        e.kind.split(":", 1)[1]
        for e in run.events
        if e.kind.startswith("finding:")
        and e.data.get("finding", {}).get("severity") in ("warning", "critical")
    }
    if expect is None:
        assert not bad, describe(bad)
        assert not online, f"online findings: {sorted(online)}"
        return findings
    assert online <= {expect.kind} | allow or expect.kind == "*", f"online: {sorted(online)}"
    hits = [f for f in bad if expect.kind in (f.kind, "*")]
    assert hits, f"no {expect.kind} finding; got {describe(findings)}"
    f = hits[0]
    if expect.step is not None:
        assert f.steps is not None and f.steps[0] == expect.step, describe([f])
    if expect.layer is not None:
        assert f.layers and f.layers[0] == expect.layer, describe([f])
    if expect.origin is not None:
        assert f.data.get("origin_pass") == expect.origin, describe([f])
    others = [g for g in bad if g.kind != f.kind and g.kind not in allow]
    assert not others, describe(others)
    return findings


def describe(findings: list[Finding]) -> str:
    return (
        "; ".join(
            f"{f.severity.value} {f.kind} steps={f.steps} layers={f.layers[:3]} "
            f"origin={f.data.get('origin_pass')}: {f.evidence[:160]}"
            for f in findings
        )
        or "(none)"
    )


def nan_at(step: int, value: float = math.nan) -> Callable[[int, torch.Tensor], torch.Tensor]:
    """A tensor hook: element [0, 0] (or the scalar) becomes ``value`` at ``step``."""

    def put(s: int, t: torch.Tensor) -> torch.Tensor:
        if s != step:
            return t
        t = t.clone()
        t.view(-1)[0] = value
        return t

    return put
