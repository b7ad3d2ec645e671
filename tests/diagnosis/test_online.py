"""Online diagnosis end to end: a watched run that explodes reports its findings once, as it trains."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import gradguard as gg
from gradguard.diagnosis import DiagnosisConfig, Finding, Severity
from gradguard.diagnosis.online import key, new_findings
from gradguard.errors import ConfigError
from gradguard.record.batch import Layer
from gradguard.runs.run import Run
from tests.diagnosis.test_real import mlp, record


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
    # over 3 flushes each problem is reported once, again only if its severity rose
    by_key: dict[tuple[str, str], list[Severity]] = {}
    for f in got:
        by_key.setdefault(key(f), []).append(f.severity)
    for k, sev in by_key.items():
        assert all(b > a for a, b in zip(sev, sev[1:])), (k, sev)
    assert len(by_key[("saturation", "layers")]) == 1, by_key
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
    seen: dict[tuple[str, str], Severity] = {}
    first = new_findings(run, seen)
    assert [f.kind for f in first] == ["vanishing_gradients"]
    assert first[0].layers == tuple(f"l{i}" for i in range(n))
    assert seen == {("vanishing_gradients", "layers"): first[0].severity}
    assert new_findings(run, seen) == []
    # info-level findings are not reported online
    mild = Run.from_arrays(
        layers=[f"l{i}" for i in range(n)],
        metrics={
            "grad_rms": (np.arange(6), 1e-2 * 0.7 ** np.arange(n - 1, -1, -1) * np.ones((6, n)))
        },
    )
    assert new_findings(mild, {}) == []


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
    g[[100, 2500]] *= 300
    prof = np.ones((s, n))
    prof[0] = 1e-2 * 0.1 ** np.arange(n - 1, -1, -1)
    run = Run.from_arrays(
        layers=[f"l{i}" for i in range(n)],
        metrics={"grad_rms": (np.arange(s), prof)},
        scalars={"grad_norm_total": (np.arange(s), g)},
    )
    full = {f.kind: f for f in gg.diagnose(run)}
    assert full["exploding_gradients"].data["spike_steps"] == [100, 2500]
    online = {f.kind: f for f in new_findings(run, {})}
    assert online["exploding_gradients"].data["spike_steps"] == [2500]
    assert online["vanishing_gradients"].steps == (0, 0)


def _saturating_run(hot: int, worst: float, n: int = 8, s: int = 6) -> Run:
    """``hot`` Tanh layers at 50% saturation (the worst of them at ``worst``), the rest at 5%."""
    sat = np.full((s, n), 0.05)
    sat[:, :hot] = 0.5
    sat[:, 0] = worst
    return Run.from_arrays(
        layers=[Layer(i, f"l{i}", "Linear", activation="Tanh") for i in range(n)],
        metrics={"act_sat_frac": (np.arange(s), sat)},
    )


def test_growing_layer_set_is_one_problem_and_escalation_is_reported() -> None:
    # regression: keyed by (kind, layers), saturation spreading 5 -> 6 -> 7 layers was reported
    # three times, and its escalation to critical (same layers) never
    seen: dict[tuple[str, str], Severity] = {}
    reported = [
        [(f.kind, f.severity, len(f.layers)) for f in new_findings(_saturating_run(h, w), seen)]
        for h, w in ((5, 0.5), (6, 0.5), (7, 0.5), (7, 0.9), (8, 0.95), (7, 0.5))
    ]
    assert reported == [
        [("saturation", Severity.WARNING, 5)],
        [],
        [],
        [("saturation", Severity.CRITICAL, 7)],  # escalated: reported again
        [],  # still critical
        [],  # back to warning: nothing new
    ]
    assert seen == {("saturation", "layers"): Severity.CRITICAL}


def test_depth_and_time_findings_of_one_kind_are_two_problems() -> None:
    s, n = 200, 6
    g = np.exp(0.1 * np.random.default_rng(0).standard_normal(s))
    g[150] *= 300  # a spike over time (>= spike_warning: a warning)
    prof = np.ones((s, n)) * 1e-2 * 0.2 ** np.arange(n)[None, :]  # grows toward the input
    run = Run.from_arrays(
        layers=[f"l{i}" for i in range(n)],
        metrics={"grad_rms": (np.arange(s), prof)},
        scalars={"grad_norm_total": (np.arange(s), g)},
    )
    seen: dict[tuple[str, str], Severity] = {}
    got = new_findings(run, seen)
    assert sorted(key(f) for f in got) == [
        ("exploding_gradients", "layers"),
        ("exploding_gradients", "run"),
    ]
    assert new_findings(run, seen) == []


def test_monitor_tail_run_is_bounded_and_finds_what_the_full_run_finds() -> None:
    torch.manual_seed(0)
    model = mlp(4, 16, nn.ReLU, sigma_w2=2.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x = torch.randn(32, 16)
    with gg.watch(model, opt, config="full", flush_every=7, diagnose_online=False) as mon:
        for step in range(150):
            loss = model(x).square().mean() * (100.0 if step == 120 else 1.0)
            opt.zero_grad()
            loss.backward()
            opt.step()
            mon.log(loss=loss)
    cfg = DiagnosisConfig(start_steps=3, online_window=20)
    tail = mon.run_log.tail(cfg.start_steps, cfg.online_window, mon.recorded_layers())
    steps, _ = tail.metric("grad_norm")
    # the first 3 and the last 20 steps, cut from the whole flushed parts (<= 7 rows each) that
    # hold them: <= 35 rows are concatenated, not 150
    assert steps.tolist() == [0, 1, 2, *range(130, 150)]
    assert len(mon.run.metric("grad_norm")[0]) == 150
    full = mon.run.bounded(cfg.start_steps, cfg.online_window)
    cut = tail
    for m in full.metric_names:
        np.testing.assert_array_equal(full.metric(m)[0], cut.metric(m)[0])
        np.testing.assert_array_equal(full.metric(m)[1], cut.metric(m)[1])
    for m in full.scalar_names:
        np.testing.assert_array_equal(full.scalar(m)[1], cut.scalar(m)[1])
    assert tail.config == mon.run.config


def test_watch_passes_the_diagnosis_config_to_online_diagnosis() -> None:
    # a healthy ReLU net outputs ~50% zeros: silent by default, dead_units with a strict config
    torch.manual_seed(0)
    got: list[Finding] = []
    record(mlp(4, 16, nn.ReLU, sigma_w2=2.0), steps=10, flush_every=5, on_finding=got.append)
    assert got == []
    strict = DiagnosisConfig(dead_warning=0.3, dead_critical=0.95)
    torch.manual_seed(0)
    with pytest.warns(RuntimeWarning, match="dead_units"):
        run = record(
            mlp(4, 16, nn.ReLU, sigma_w2=2.0),
            steps=10,
            flush_every=5,
            on_finding=got.append,
            diagnosis=strict,
        )
    assert [f.kind for f in got] == ["dead_units"]
    assert run.config["watch"]["diagnosis"]["dead_warning"] == 0.3
    with pytest.raises(ConfigError, match="diagnosis must be a DiagnosisConfig"):
        gg.watch(nn.Linear(2, 2), diagnosis={"dead_warning": 0.3})


def test_online_warning_points_at_the_training_loop_and_prints_once(capfd) -> None:
    layers: list[nn.Module] = []
    for _ in range(20):
        layers += [nn.Linear(16, 16), nn.Sigmoid()]
    model = nn.Sequential(*layers)
    for m in model:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with gg.watch(model, opt, flush_every=5) as mon:
            for _ in range(10):
                opt.zero_grad()
                model(torch.randn(8, 16)).sum().backward()
                opt.step()  # the line the warning names
    found = [w for w in caught if "vanishing_gradients" in str(w.message)]
    assert len(found) == 1
    assert found[0].filename == __file__
    line = Path(__file__).read_text().splitlines()[found[0].lineno - 1]
    assert "opt.step()" in line
    assert mon.step_count == 10
    # no second copy on stderr from logging's last-resort handler
    assert "vanishing_gradients" not in capfd.readouterr().err
