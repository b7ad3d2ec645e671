"""Rules on synthetic statistics (Run.from_arrays): expected findings, numbers, and negatives."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from gradguard.diagnosis import DiagnosisConfig, Finding, Severity, diagnose
from gradguard.errors import ConfigError
from gradguard.metrics import (
    ACT_GRAD_NORM,
    ACT_SAT_FRAC,
    ACT_STD,
    ACT_ZERO_FRAC,
    GRAD_NORM,
    GRAD_NORM_TOTAL,
    GRAD_RMS,
    LOSS,
    NONFINITE,
    UPDATE_RATIO,
    WEIGHT_NORM,
)
from gradguard.record.batch import Layer
from gradguard.runs.run import Run

L, S = 10, 20


def depth_values(
    per_layer: float, *, n: int = L, steps: int = S, noise: float = 0.1, seed: int = 0
):
    """(steps, n) values that grow by ``per_layer`` per layer toward the input (index 0)."""
    rng = np.random.default_rng(seed)
    base = per_layer ** np.arange(n - 1, -1, -1, dtype=np.float64)  # last layer = 1
    return 1e-2 * base * np.exp(noise * rng.standard_normal((steps, n)))


def make_run(
    *,
    metrics: dict[str, np.ndarray] | None = None,
    scalars: dict[str, np.ndarray] | None = None,
    activation: str | None = None,
    n: int = L,
    kind: str = "Linear",
) -> Run:
    layers = [Layer(i, f"fc{i}", kind, 100, True, activation) for i in range(n)]
    return Run.from_arrays(
        layers=layers,
        metrics={k: (np.arange(len(v)), v) for k, v in (metrics or {}).items()},
        scalars={k: (np.arange(len(v)), v) for k, v in (scalars or {}).items()},
    )


def by_kind(findings: list[Finding], kind: str) -> list[Finding]:
    return [f for f in findings if f.kind == kind]


def one(findings: list[Finding], kind: str) -> Finding:
    hits = by_kind(findings, kind)
    assert len(hits) == 1, [str(f) for f in findings]
    return hits[0]


# ---------------------------------------------------------------------------- depth
@pytest.mark.parametrize(
    ("metric", "per_layer", "kind", "severity"),
    [
        (GRAD_RMS, 0.3, "vanishing_gradients", Severity.CRITICAL),  # 0.3^9 = 2e-5
        (GRAD_RMS, 0.55, "vanishing_gradients", Severity.WARNING),  # 0.55^9 = 4.6e-3
        (GRAD_RMS, 0.72, "vanishing_gradients", Severity.INFO),  # 0.72^9 = 0.052
        (ACT_GRAD_NORM, 0.3, "vanishing_gradients", Severity.CRITICAL),
        (GRAD_RMS, 3.0, "exploding_gradients", Severity.CRITICAL),  # 3^9 = 2e4
        (GRAD_RMS, 1.8, "exploding_gradients", Severity.WARNING),  # 1.8^9 = 198
        (ACT_GRAD_NORM, 1.35, "exploding_gradients", Severity.INFO),  # 1.35^9 = 15
    ],
)
def test_depth_profile_is_fitted(
    metric: str, per_layer: float, kind: str, severity: Severity
) -> None:
    run = make_run(metrics={metric: depth_values(per_layer)})
    f = one(diagnose(run), kind)
    assert f.severity is severity
    assert f.data["signal"] == metric
    assert f.data["per_layer"] == pytest.approx(per_layer, rel=0.05)
    assert f.data["ratio_first_last"] == pytest.approx(per_layer**9, rel=0.4)
    assert f.layers == tuple(f"fc{i}" for i in range(L))
    assert f.remedies and f.evidence and f.cause


@pytest.mark.parametrize("per_layer", [0.8, 0.9, 1.0, 1.1, 1.25])
def test_healthy_depth_profiles_stay_silent(per_layer: float) -> None:
    # 1.25^9 = 7.5 and 0.8^9 = 0.13: within the 10x measured on healthy nets
    run = make_run(metrics={GRAD_RMS: depth_values(per_layer, noise=0.3)})
    findings = diagnose(run)
    assert not by_kind(findings, "vanishing_gradients")
    assert not by_kind(findings, "exploding_gradients")
    assert one(findings, "healthy").data["per_layer"] == pytest.approx(per_layer, rel=0.1)


def test_exploding_hidden_from_weight_gradients_is_found_from_dl_dh() -> None:
    # ReLU at sigma_w^2 = 4: activations grow forward x sqrt(2), dL/dh grows backward x sqrt(2),
    # the weight gradient (their product) stays flat over depth.
    n = 20
    g = np.sqrt(2.0)
    run = make_run(
        n=n,
        metrics={
            GRAD_RMS: depth_values(1.0, n=n),
            ACT_GRAD_NORM: depth_values(g, n=n),
            ACT_STD: 1.0 / depth_values(g, n=n),
        },
        scalars={LOSS: np.r_[np.full(5, 140.0), np.full(25, 1.4)]},
    )
    f = one(diagnose(run), "exploding_gradients")
    assert f.severity is Severity.WARNING  # 2^9.5 ~ 724x: warning by magnitude
    assert f.data["per_layer"] == pytest.approx(g, rel=0.05)
    assert f.data["forward_ratio"] == pytest.approx(g ** (n - 1), rel=0.5)
    assert "weight-gradient RMS stays flat" in f.evidence
    assert "loss starts 100x" in f.evidence


def test_loss_far_too_large_makes_a_mild_explosion_a_warning() -> None:
    mild = {ACT_GRAD_NORM: depth_values(1.35)}
    assert one(diagnose(make_run(metrics=mild)), "exploding_gradients").severity is Severity.INFO
    loss = np.r_[np.full(5, 50.0), np.full(25, 1.0)]
    f = one(diagnose(make_run(metrics=mild, scalars={LOSS: loss})), "exploding_gradients")
    assert f.severity is Severity.WARNING


def test_a_loss_that_fell_while_a_mild_gain_grew_is_no_warning() -> None:
    # A healthy deep ReLU net (He or Glorot init, Adam) starts flat over depth and learns a mild
    # gain (~1.4x per layer); its loss falls 100x because it learns. Only an explosion present
    # at the first step explains a loss that starts too large.
    grown = np.r_[depth_values(1.0, steps=10), depth_values(1.35, steps=10, seed=1)]
    loss = np.r_[np.full(5, 2.3), np.geomspace(2.3, 0.02, 25)]
    f = one(
        diagnose(make_run(metrics={ACT_GRAD_NORM: grown}, scalars={LOSS: loss})),
        "exploding_gradients",
    )
    assert f.severity is Severity.INFO
    assert f.data["per_layer_start"] == pytest.approx(1.0, abs=0.05)
    assert "loss starts" not in f.evidence


def test_batchnorm_layers_are_off_the_depth_axis() -> None:
    # Linear layers vanish x0.3 per layer; interleaved BatchNorm layers carry unrelated scales.
    layers = []
    cols = []
    lin = depth_values(0.3)
    rng = np.random.default_rng(1)
    for i in range(L):
        layers.append(Layer(len(layers), f"fc{i}", "Linear"))
        cols.append(lin[:, i])
        if i < L - 1:
            layers.append(Layer(len(layers), f"bn{i}", "BatchNorm1d", activation="ReLU"))
            cols.append(rng.uniform(1e-3, 1.0, S))
    run = Run.from_arrays(layers=layers, metrics={GRAD_RMS: (np.arange(S), np.stack(cols, axis=1))})
    f = one(diagnose(run), "vanishing_gradients")
    assert f.layers == tuple(f"fc{i}" for i in range(L))
    assert f.data["per_layer"] == pytest.approx(0.3, rel=0.05)


def test_adaptive_optimizer_compensation_lowers_severity() -> None:
    grads = depth_values(0.55)  # warning by magnitude
    flat_updates = depth_values(1.0)
    vanishing_updates = depth_values(0.55)
    f = one(
        diagnose(make_run(metrics={GRAD_RMS: grads, UPDATE_RATIO: flat_updates})),
        "vanishing_gradients",
    )
    assert f.severity is Severity.INFO and f.data["compensated"]
    f = one(
        diagnose(make_run(metrics={GRAD_RMS: grads, UPDATE_RATIO: vanishing_updates})),
        "vanishing_gradients",
    )
    assert f.severity is Severity.WARNING and not f.data["compensated"]


def test_underflowed_early_layers_are_critical() -> None:
    v = depth_values(0.8)
    v[:, :4] = 0.0  # the gradient underflowed to exactly 0 in fp32
    f = one(diagnose(make_run(metrics={GRAD_RMS: v})), "vanishing_gradients")
    assert f.severity is Severity.CRITICAL
    assert f.data["zero_layers"] == ["fc0", "fc1", "fc2", "fc3"]
    assert "exactly zero gradient" in f.evidence


def test_sigmoid_vanishing_ranks_activation_change_first() -> None:
    run = make_run(metrics={GRAD_RMS: depth_values(0.3)}, activation="Sigmoid")
    f = one(diagnose(run), "vanishing_gradients")
    assert f.remedies[0].name == "ReLU-family activation"
    assert "0.25" in f.cause
    assert len(f.remedies) <= DiagnosisConfig().max_remedies


# ---------------------------------------------------------------------------- over time
def lognormal(n: int, sigma: float, seed: int = 0, level: float = 1.0) -> np.ndarray:
    return level * np.exp(sigma * np.random.default_rng(seed).standard_normal(n))


def test_gradient_spikes_are_found_at_their_steps() -> None:
    g = lognormal(200, 0.3)
    g[[60, 150]] *= 300
    f = one(diagnose(make_run(scalars={GRAD_NORM_TOTAL: g})), "exploding_gradients")
    assert f.severity is Severity.WARNING
    # the same jumps at 30x: a note (info), not an alarm
    mild = lognormal(200, 0.3)
    mild[[60, 150]] *= 40
    f = one(diagnose(make_run(scalars={GRAD_NORM_TOTAL: mild})), "exploding_gradients")
    assert f.severity is Severity.INFO and f.data["spike_steps"] == [60, 150]
    assert f.data["spike_steps"] == [60, 150]
    assert "first at step 60" in f.evidence
    assert f.layers == ()
    assert [r.name for r in f.remedies[:2]] == ["gradient norm clipping", "a lower learning rate"]


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("sigma", [0.2, 0.5, 0.8])
def test_noise_does_not_trigger_spikes(seed: int, sigma: float) -> None:
    g = lognormal(500, sigma, seed)
    findings = diagnose(make_run(scalars={GRAD_NORM_TOTAL: g, LOSS: lognormal(500, 0.2, seed + 9)}))
    assert not by_kind(findings, "exploding_gradients")
    assert not by_kind(findings, "divergence")


@pytest.mark.parametrize(
    ("rate", "severity"), [(1.03, Severity.WARNING), (1.06, Severity.CRITICAL), (1.005, None)]
)
def test_exponential_growth_over_time(rate: float, severity: Severity | None) -> None:
    g = rate ** np.arange(200) * lognormal(200, 0.1)
    found = by_kind(diagnose(make_run(scalars={GRAD_NORM_TOTAL: g})), "exploding_gradients")
    if severity is None:
        assert not found
    else:
        assert len(found) == 1 and found[0].severity is severity
        # the peak of the trailing median (loss_window = 9 points, on the log scale) over the
        # first 5 steps' median
        trail = [np.exp(np.median(np.log(g[i - 9 : i]))) for i in range(9, 201)]
        expect = max(trail) / np.median(g[:5])
        assert found[0].data["growth"] == pytest.approx(expect)


def test_weight_norms_growing_an_order_of_magnitude() -> None:
    w = np.ones((50, L))
    w[:, 3] = np.geomspace(1.0, 30.0, 50)
    f = one(diagnose(make_run(metrics={WEIGHT_NORM: w})), "exploding_gradients")
    assert list(f.data["weight_growth"]) == ["fc3"]
    assert "'fc3'" in f.evidence


# ---------------------------------------------------------------------------- non-finite
def test_nonfinite_names_first_step_and_layer() -> None:
    nf = np.zeros((12, L))
    nf[7, 4] = 3.0
    nf[8:, :] = 100.0
    loss = np.ones(12)
    loss[8:] = np.nan
    f = one(diagnose(make_run(metrics={NONFINITE: nf}, scalars={LOSS: loss})), "nonfinite")
    assert f.severity is Severity.CRITICAL
    assert f.steps == (7, 11) and f.layers == ("fc4",)
    assert f.data["first_step"] == 7 and f.data["sources"][LOSS] == 8
    assert len(f.data["layers_affected"]) == L


def test_nonfinite_weights_are_the_origin() -> None:
    # a NaN weight in fc6 makes every gradient NaN at the same step: the weight is the origin
    w = np.ones((10, L))
    w[5:, 6] = np.nan
    nf = np.zeros((10, L))
    nf[5:, :] = 1
    f = one(diagnose(make_run(metrics={WEIGHT_NORM: w, NONFINITE: nf})), "nonfinite")
    assert f.layers == ("fc6",) and f.steps[0] == 5


@pytest.mark.parametrize(
    ("metrics", "scalars", "expect"),
    [
        ({GRAD_NORM: np.where(np.arange(L) == 2, np.inf, 1.0) * np.ones((4, L))}, {}, (0, "fc2")),
        ({}, {LOSS: np.r_[np.ones(6), np.inf]}, (6, None)),
        ({}, {GRAD_NORM_TOTAL: np.r_[np.ones(3), np.nan, np.ones(3)]}, (3, None)),
        # NaN in a layer that never has a value means "not recorded", not NaN
        ({GRAD_NORM: np.where(np.arange(L) == 2, np.nan, 1.0) * np.ones((4, L))}, {}, None),
        ({ACT_GRAD_NORM: np.full((4, L), np.nan)}, {LOSS: np.ones(5)}, None),
    ],
)
def test_nonfinite_sources(metrics, scalars, expect) -> None:
    found = by_kind(diagnose(make_run(metrics=metrics, scalars=scalars)), "nonfinite")
    if expect is None:
        assert not found
    else:
        (f,) = found
        assert f.data["first_step"] == expect[0] and f.data["first_layer"] == expect[1]


# ---------------------------------------------------------------------------- activations
@pytest.mark.parametrize(
    ("act", "frac", "severity"),
    [
        ("Tanh", 0.6, Severity.WARNING),
        ("Sigmoid", 0.9, Severity.CRITICAL),
        ("Tanh", 0.1, None),
        ("Tanh", np.nan, None),
    ],
)
def test_saturation(act: str, frac: float, severity: Severity | None) -> None:
    sat = np.full((S, L), frac)
    sat[:, :5] = 0.01
    found = by_kind(diagnose(make_run(metrics={ACT_SAT_FRAC: sat}, activation=act)), "saturation")
    if severity is None:
        assert not found
        return
    (f,) = found
    assert f.severity is severity
    assert f.layers == tuple(f"fc{i}" for i in range(5, L))
    assert f.data["sat_frac"]["fc7"] == pytest.approx(frac)
    assert f.remedies[0].name == "ReLU-family activation"


@pytest.mark.parametrize(
    ("act", "frac", "severity"),
    [
        ("ReLU", 0.95, Severity.WARNING),
        ("ReLU", 0.999, Severity.CRITICAL),
        ("ReLU", 0.5, None),
        ("LeakyReLU", 0.999, None),  # leaky units cannot die (and are never exactly 0)
        (None, 0.999, None),
    ],
)
def test_dead_units(act: str | None, frac: float, severity: Severity | None) -> None:
    z = np.full((S, L), 0.5)
    z[:, 2] = frac
    found = by_kind(diagnose(make_run(metrics={ACT_ZERO_FRAC: z}, activation=act)), "dead_units")
    if severity is None:
        assert not found
        return
    (f,) = found
    assert f.severity is severity and f.layers == ("fc2",)
    assert [r.name for r in f.remedies[:3]] == [
        "Leaky ReLU / ELU / GELU",
        "a lower learning rate",
        "He (Kaiming) initialisation",
    ]


# ---------------------------------------------------------------------------- loss
def test_stalled_learning() -> None:
    flat = 1.386 + 0.01 * np.random.default_rng(0).standard_normal(300)
    f = one(diagnose(make_run(scalars={LOSS: flat})), "stalled_learning")
    assert f.severity is Severity.WARNING
    assert abs(f.data["relative_decrease"]) < 0.02
    learning = np.linspace(2.0, 0.5, 100) + 0.01 * np.random.default_rng(0).standard_normal(100)
    assert not by_kind(diagnose(make_run(scalars={LOSS: learning})), "stalled_learning")
    assert not by_kind(diagnose(make_run(scalars={LOSS: flat[:10]})), "stalled_learning")


def test_divergence_rising_loss() -> None:
    # rises from its best 0.5 back to 1.5, still below its start 2.0: a warning
    loss = np.r_[np.linspace(2.0, 0.5, 60), np.linspace(0.5, 1.5, 40)]
    f = one(diagnose(make_run(scalars={LOSS: loss})), "divergence")
    assert f.severity is Severity.WARNING
    # the best level held for a window (9 points of the 9-point median) around the V's tip:
    # 0.025 a step on either side puts it ~0.1 above the tip
    assert 0.5 <= f.data["loss_best"] <= 0.65
    assert not f.data["ended_above_start"]
    assert f.remedies[0].name == "a lower learning rate"
    # ends at 3.0, above where it started: worse than at initialisation, critical
    loss = np.r_[np.linspace(2.0, 0.5, 60), np.linspace(0.5, 3.0, 40)]
    f = one(diagnose(make_run(scalars={LOSS: loss})), "divergence")
    assert f.severity is Severity.CRITICAL
    assert f.data["ended_above_start"]
    assert "ended above its start 1.95 (steps 0..4)" in f.evidence


def test_divergence_loss_spike_and_oscillation() -> None:
    loss = np.linspace(2.0, 1.0, 100) * np.exp(0.02 * np.random.default_rng(0).standard_normal(100))
    loss[70] = 20.0
    f = one(diagnose(make_run(scalars={LOSS: loss})), "divergence")
    assert f.data["spike_steps"] == [70]
    osc = 1.0 + 0.8 * (-1.0) ** np.arange(100)  # 1.8, 0.2, 1.8, ...
    f = one(diagnose(make_run(scalars={LOSS: osc})), "divergence")
    assert "oscillates" in f.evidence


# ---------------------------------------------------------------------------- diagnose()
def test_sorted_by_severity_and_healthy_only_when_nothing_warns() -> None:
    run = make_run(
        metrics={
            GRAD_RMS: depth_values(0.72),
            NONFINITE: np.r_[np.zeros((19, L)), np.ones((1, L))],
        },
    )
    findings = diagnose(run)
    assert [f.severity for f in findings] == sorted(
        (f.severity for f in findings), key=lambda s: -s.rank
    )
    assert findings[0].kind == "nonfinite"
    assert not by_kind(findings, "healthy")
    healthy = one(diagnose(make_run(metrics={GRAD_RMS: depth_values(1.0)})), "healthy")
    assert healthy.severity is Severity.INFO and "per layer" in healthy.evidence


def test_empty_run_says_no_data() -> None:
    (f,) = diagnose(Run.from_arrays(layers=["a", "b"]))
    assert f.kind == "no_data" and f.severity is Severity.INFO


def test_thresholds_come_from_the_config() -> None:
    run = make_run(metrics={GRAD_RMS: depth_values(0.72)})  # ratio ~19
    assert one(diagnose(run), "vanishing_gradients").severity is Severity.INFO
    strict = DiagnosisConfig(depth_info=2.0, depth_warning=5.0, depth_critical=1e3)
    assert one(diagnose(run, config=strict), "vanishing_gradients").severity is Severity.WARNING


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="needs a gradguard Run"):
        diagnose({GRAD_NORM: []})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="DiagnosisConfig"):
        diagnose(make_run(), config={"depth_info": 3})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="depth_info <= depth_warning"):
        DiagnosisConfig(depth_info=1000.0)


def test_finding_renders() -> None:
    run = make_run(metrics={GRAD_RMS: depth_values(0.3)}, activation="Sigmoid")
    f = one(diagnose(run), "vanishing_gradients")
    text = str(f)
    assert text.startswith("[CRITICAL] vanishing gradients (layers fc0, fc1, fc2, fc3 (+6 more)")
    assert re.search(r"falls x0\.(29|30|31)\d* per layer", text), text
    assert "1. ReLU-family activation" in text
    from rich.console import Console

    console = Console(width=100, record=True, color_system=None)
    console.print(f)
    out = console.export_text()
    assert "CRITICAL vanishing gradients" in out and "evidence" in out and "gg.init_" in out
    assert math.isclose(f.to_dict()["data"]["per_layer"], f.data["per_layer"])


def test_sometimes_unused_layer_is_not_nonfinite() -> None:
    # regression: a layer used on some steps only has NaN grad_norm (no gradient) elsewhere
    g = np.ones((8, L))
    g[::2, 5] = np.nan
    run = make_run(metrics={GRAD_NORM: g, GRAD_RMS: g, NONFINITE: np.zeros((8, L))})
    assert not by_kind(diagnose(run), "nonfinite")
    run = make_run(metrics={UPDATE_RATIO: g})
    assert not by_kind(diagnose(run), "nonfinite")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"spike_ratio": 1.0}, "spike_ratio"),
        ({"loss_spike_ratio": 0.5}, "loss_spike_ratio"),
        ({"saturation_warning": 0.9}, "saturation_warning must be <= saturation_critical"),
        ({"dead_critical": 0.5}, "dead_warning must be <= dead_critical"),
        ({"time_growth_critical": 10.0}, "time_growth_warning must be <= time_growth_critical"),
        ({"loss_start_note": 20.0}, "loss_start_note must be <= loss_start_warning"),
        ({"divergence_critical": 1.2}, "rise_ratio must be <= divergence_critical"),
        ({"loss_window": 0}, "loss_window"),
        ({"spike_min_points": 0}, "spike_min_points"),
        ({"start_steps": 2.5}, "start_steps"),
        ({"nonfinite_spike_points": 1}, "nonfinite_spike_points"),
        ({"underflow_early_fraction": 0.0}, "underflow_early_fraction"),
        ({"spike_z": float("nan")}, "spike_z"),
        ({"converged_loss": -1.0}, "converged_loss"),
    ],
)
def test_config_validation_names_the_field_and_the_fix(kwargs: dict, field: str) -> None:
    from gradguard.errors import GradguardError

    with pytest.raises(GradguardError, match=re.escape(field)) as e:
        DiagnosisConfig(**kwargs)
    assert re.search(r"pass e\.g\.|lower |raise ", str(e.value)), str(e.value)


def test_docs_list_every_config_field_with_its_default() -> None:
    from dataclasses import fields
    from pathlib import Path

    doc = (Path(__file__).parents[2] / "docs" / "diagnosis.md").read_text()
    table = doc[doc.index("| field | default | meaning |") :]
    table = table[: table.index("\n\n")]
    rows = {}
    for line in table.splitlines()[2:]:
        names, defaults = line.split("|")[1:3]
        for n, d in zip(names.split("/"), defaults.split("/"), strict=True):
            rows[n.strip().strip("`")] = float(d)
    assert {f.name: float(f.default) for f in fields(DiagnosisConfig)} == rows


def _loss_run(loss: np.ndarray, **scalars: np.ndarray) -> Run:
    s = np.arange(len(loss))
    return Run.from_arrays(
        layers=["a", "b"],
        scalars={LOSS: (s, loss), **{k: (s, v) for k, v in scalars.items()}},
    )


def test_loss_thresholds_come_from_the_config() -> None:
    rng = np.random.default_rng(0)
    # a loss that falls 100x, then climbs back to 0.06: ~3x the best level it held for a window
    # (on the way down, between the tip 0.01 and 0.03), a rise of ~4% of the descent, below
    # rise_min_fraction (40%) by default
    loss = np.r_[np.geomspace(1.0, 0.01, 60), np.full(20, 0.06)] * np.exp(
        0.01 * rng.standard_normal(80)
    )
    assert not by_kind(diagnose(_loss_run(loss)), "divergence")
    (f,) = by_kind(
        diagnose(_loss_run(loss), config=DiagnosisConfig(rise_min_fraction=0.01)), "divergence"
    )
    assert f.severity is Severity.WARNING and "rose from its best" in f.evidence
    assert 0.01 < f.data["loss_best"] < 0.03
    crit = DiagnosisConfig(rise_min_fraction=0.01, divergence_critical=2.5)
    assert one(diagnose(_loss_run(loss), config=crit), "divergence").severity is Severity.CRITICAL
    # a 2.5x loss jump: below loss_spike_ratio (3) by default
    jump = np.exp(0.01 * rng.standard_normal(60))
    jump[40] *= 2.5
    assert not by_kind(diagnose(_loss_run(jump)), "divergence")
    (f,) = by_kind(
        diagnose(_loss_run(jump), config=DiagnosisConfig(loss_spike_ratio=2.0)), "divergence"
    )
    assert f.data["spike_steps"] == [40]
    # a flat loss of 1e-7: stalled by default, "converged" with converged_loss=1e-6
    flat = np.full(200, 1e-7)
    assert by_kind(diagnose(_loss_run(flat)), "stalled_learning")
    assert not by_kind(
        diagnose(_loss_run(flat), config=DiagnosisConfig(converged_loss=1e-6)), "stalled_learning"
    )


def test_time_thresholds_come_from_the_config() -> None:
    g = np.geomspace(1.0, 1e5, 8)  # 8 steps of growth: fewer than min_time_points (10)
    run = _loss_run(np.ones(8), grad_norm_total=g)
    assert not by_kind(diagnose(run), "exploding_gradients")
    cfg = DiagnosisConfig(min_time_points=8, loss_window=3)
    (f,) = by_kind(diagnose(run, config=cfg), "exploding_gradients")
    assert f.data["growth"] >= 100
