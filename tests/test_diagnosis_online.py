"""Online diagnosis end to end: a watched run that explodes reports its findings once, as it trains."""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn

import gradguard as gg
from gradguard.diagnosis import Finding, Severity
from gradguard.diagnosis.online import new_findings
from gradguard.store import Run
from tests.test_diagnosis_real import mlp, record


def test_exploding_run_reports_once_per_finding(tmp_path) -> None:
    torch.manual_seed(0)
    got: list[Finding] = []
    db = tmp_path / "explode.db"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = record(
            mlp(10, 32, nn.Tanh, sigma_w2=25.0),
            steps=15,
            lr=0.01,
            flush_every=5,
            on_finding=got.append,
            store=str(db),
        )
    kinds = [f.kind for f in got]
    assert "exploding_gradients" in kinds and "saturation" in kinds
    assert len(kinds) == len(set((f.kind, f.layers) for f in got))  # each key once over 3 flushes
    assert all(f.severity >= Severity.WARNING for f in got)
    explode = next(f for f in got if f.kind == "exploding_gradients")
    assert explode.steps is not None and explode.steps[0] == 0  # found at the first flush
    msgs = [str(w.message) for w in caught if "exploding_gradients" in str(w.message)]
    assert len(msgs) == 1 and msgs[0].startswith("gradguard: ")
    # stored as events, in memory and in the store file
    assert "finding:exploding_gradients" in {e.kind for e in run.events}
    stored = gg.load(db)
    ev = [e for e in stored.events if e.kind == "finding:exploding_gradients"]
    assert len(ev) == 1 and ev[0].data["finding"]["kind"] == "exploding_gradients"


def test_new_findings_remembers_what_it_reported() -> None:
    n = 8
    v = 1e-2 * 0.2 ** np.arange(n - 1, -1, -1, dtype=np.float64) * np.ones((6, n))
    run = Run.from_arrays(
        layers=[f"l{i}" for i in range(n)],
        metrics={
            "grad_rms": (np.arange(6), v),
            "act_sat_frac": (np.arange(6), np.full((6, n), 0.05)),
        },
        scalars={"loss": (np.arange(6), np.ones(6))},
    )
    seen: set[tuple[str, tuple[str, ...]]] = set()
    first = new_findings(run, seen)
    assert [f.kind for f in first] == ["vanishing_gradients"]
    assert seen == {("vanishing_gradients", tuple(f"l{i}" for i in range(n)))}
    assert new_findings(run, seen) == []
    # info-level findings are not reported online
    mild = Run.from_arrays(
        layers=[f"l{i}" for i in range(n)],
        metrics={
            "grad_rms": (np.arange(6), 1e-2 * 0.7 ** np.arange(n - 1, -1, -1) * np.ones((6, n)))
        },
    )
    assert new_findings(mild, set()) == []


def test_healthy_run_reports_nothing_online() -> None:
    torch.manual_seed(0)
    got: list[Finding] = []
    record(mlp(4, 16, nn.ReLU, sigma_w2=2.0), steps=10, flush_every=5, on_finding=got.append)
    assert got == []


def test_online_sees_the_start_and_a_bounded_tail() -> None:
    # 3000 steps: a spike at step 100 is outside the online tail (last 1000 steps), one at 2500
    # inside; the depth profile at step 0 (vanishing at init) is always kept.
    s, n = 3000, 6
    g = np.exp(0.2 * np.random.default_rng(0).standard_normal(s))
    g[[100, 2500]] *= 100
    prof = np.ones((s, n))
    prof[0] = 1e-2 * 0.1 ** np.arange(n - 1, -1, -1)
    run = Run.from_arrays(
        layers=[f"l{i}" for i in range(n)],
        metrics={"grad_rms": (np.arange(s), prof)},
        scalars={"grad_norm_total": (np.arange(s), g)},
    )
    full = {f.kind: f for f in gg.diagnose(run)}
    assert full["exploding_gradients"].data["spike_steps"] == [100, 2500]
    online = {f.kind: f for f in new_findings(run, set())}
    assert online["exploding_gradients"].data["spike_steps"] == [2500]
    assert online["vanishing_gradients"].steps == (0, 0)
