"""Mean-field theory against closed forms, scipy quadrature and simulated wide networks."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy.integrate import dblquad, quad

import gradguard as gg
from gradguard.errors import GradguardError
from gradguard.theory import _gauss as G
from gradguard.theory.activations import resolve_activation

ALL = ["tanh", "sigmoid", "relu", "leaky_relu", "elu", "gelu", "selu", "erf", "hard_tanh", "linear"]


def quad_expect(f, q: float, kinks=(0.0,)) -> float:
    """E[f(sqrt(q) z)] by adaptive quadrature, split at the kinks (the independent reference)."""
    s = math.sqrt(q)
    cuts = sorted({-15.0, 15.0, *[k / s for k in kinks if abs(k / s) < 15]})
    g = lambda z: float(f(np.array([s * z]))[0]) * math.exp(-z * z / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    return sum(quad(g, a, b, epsabs=0, epsrel=1e-12, limit=400)[0] for a, b in zip(cuts, cuts[1:]))


# ---- closed forms ---------------------------------------------------------------------------


@pytest.mark.parametrize("sw", [0.5, 1.0, 2.0, 3.0])
@pytest.mark.parametrize("sb", [0.0, 0.2])
def test_relu_chi1_is_half_sigma_w2(sw, sb):
    assert gg.theory.chi1("relu", sw, sb) == pytest.approx(sw / 2, rel=1e-12)
    # the same through numerical integration (a plain callable has no closed form)
    numeric = resolve_activation(lambda x: np.maximum(x, 0.0))
    if sw < 2:  # finite q*, found by root finding on quadrature
        assert gg.theory.chi1(numeric, sw, sb) == pytest.approx(sw / 2, rel=1e-6)


def test_relu_q_star_closed_form():
    mf = gg.theory.mean_field("relu", 1.5, 0.1)
    assert mf.q_star == pytest.approx(0.1 / (1 - 0.75), rel=1e-12)
    assert mf.phase == "ordered" and mf.c_star == 1.0


@pytest.mark.parametrize("sw", [0.3, 0.9, 1.7])
def test_linear_chi1_is_sigma_w2(sw):
    assert gg.theory.chi1("linear", sw, 0.1) == pytest.approx(sw, rel=1e-12)


def test_tanh_without_bias_is_critical_at_one():
    assert gg.theory.critical_sigma_w2("tanh", 0.0) == pytest.approx(1.0, abs=1e-8)
    assert gg.theory.phase("tanh", 1.0, 0.0) == "critical"
    assert gg.theory.phase("tanh", 0.9, 0.0) == "ordered"
    assert gg.theory.phase("tanh", 1.1, 0.0) == "chaotic"
    below = gg.theory.mean_field("tanh", 0.8, 0.0)
    assert below.q_star == 0.0 and below.chi_1 == pytest.approx(0.8, rel=1e-9) and below.note


def test_known_critical_points():
    assert gg.theory.critical_sigma_w2("relu", 0.3) == pytest.approx(2.0)
    assert gg.theory.critical_sigma_w2("leaky_relu", 0.0) == pytest.approx(2 / (1 + 0.01**2))
    # at sigma_b^2 = 0, chi_1 - 1 is second order in sigma_w^2 - critical: ~sqrt(eps) accuracy
    assert gg.theory.critical_sigma_w2("erf", 0.0) == pytest.approx(math.pi / 4, rel=1e-7)
    assert gg.theory.critical_sigma_w2("gelu", 0.0) == pytest.approx(4.0, rel=1e-8)
    # Schoenholz et al. (2017), fig. 1: tanh at sigma_b^2 = 0.05 turns chaotic near sigma_w^2 = 1.76
    assert gg.theory.critical_sigma_w2("tanh", 0.05) == pytest.approx(1.761, abs=2e-3)


@pytest.mark.parametrize("act", ["tanh", "sigmoid", "elu", "selu", "hard_tanh", "erf"])
def test_chi1_is_one_on_the_critical_line(act):
    sw = gg.theory.critical_sigma_w2(act, 0.1)
    assert gg.theory.chi1(act, sw, 0.1) == pytest.approx(1.0, abs=1e-9)


def test_gelu_transition_with_bias_is_a_jump():
    # gelu's length map loses its fixed point in a saddle-node: q* jumps to infinity while chi_1
    # is still below 1; critical_sigma_w2 returns that boundary
    sw = gg.theory.critical_sigma_w2("gelu", 0.1)
    below, above = (
        gg.theory.mean_field("gelu", sw - 1e-6, 0.1),
        gg.theory.mean_field("gelu", sw + 1e-6, 0.1),
    )
    assert math.isfinite(below.q_star) and below.chi_1 < 0.9
    assert math.isinf(above.q_star) and above.chi_1 > 1.0 and above.phase == "chaotic"


def test_selu_is_self_normalising():
    assert gg.theory.mean_field("selu", 1.0, 0.0).q_star == pytest.approx(1.0, rel=1e-6)


# ---- quadrature --------------------------------------------------------------------------------


@pytest.mark.parametrize("q", [0.05, 0.7, 3.0])
def test_split_quadrature_agrees_with_gauss_hermite_on_smooth_functions(q):
    tanh2 = lambda u: np.tanh(u) ** 2  # noqa: E731
    split = G.gauss_expect(tanh2, np.zeros(1), np.sqrt([q]))[0]
    assert split == pytest.approx(G.gauss_hermite_expect(tanh2, q, n=200), rel=1e-9)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("q", [1e-3, 0.5, 4.0, 300.0])
def test_gaussian_integrals_match_scipy_quad(name, q):
    act = resolve_activation(name)
    kinks = (0.0, *act.kinks)
    ref_m2 = quad_expect(lambda u: act.fn(u) ** 2, q, kinks)
    ref_d2 = quad_expect(lambda u: act.deriv(u) ** 2, q, kinks)
    ref_dm2 = quad_expect(lambda u: act.fn(u) * act.deriv(u) * u, q, kinks) / q
    assert G.m2(act, q)[0] == pytest.approx(ref_m2, rel=1e-9)
    assert G.d2(act, q)[0] == pytest.approx(ref_d2, rel=1e-9)
    assert G.dm2(act, q)[0] == pytest.approx(ref_dm2, rel=1e-8)


POINTS = [("tanh", 1.5, 0.05), ("tanh", 3.0, 0.3), ("sigmoid", 4.0, 0.1), ("elu", 1.5, 0.1),
          ("gelu", 2.0, 0.05), ("selu", 1.0, 0.0), ("erf", 2.0, 0.2), ("hard_tanh", 1.2, 0.05),
          ("relu", 1.5, 0.1), ("leaky_relu", 1.8, 0.05), ("linear", 0.9, 0.1)]  # fmt: skip


@pytest.mark.parametrize(("name", "sw", "sb"), POINTS)
def test_fixed_point_and_chi1_to_1e6_against_quad(name, sw, sb):
    act = resolve_activation(name)
    mf = gg.theory.mean_field(name, sw, sb)
    kinks = (0.0, *act.kinks)
    q = mf.q_star
    assert q > 0
    # q* is a fixed point of the length map computed independently by scipy quad
    assert sw * quad_expect(lambda u: act.fn(u) ** 2, q, kinks) + sb == pytest.approx(q, rel=1e-6)
    assert mf.chi_1 == pytest.approx(
        sw * quad_expect(lambda u: act.deriv(u) ** 2, q, kinks), rel=1e-6
    )


def test_chaotic_correlation_fixed_point_against_dblquad():
    sw, sb = 4.0, 0.3
    mf = gg.theory.mean_field("tanh", sw, sb)
    assert mf.phase == "chaotic" and 0 < mf.c_star < 1
    q, c = mf.q_star, mf.c_star
    s = math.sqrt(q)
    dens = lambda z1, z2: math.exp(-(z1 * z1 + z2 * z2) / 2) / (2 * math.pi)  # noqa: E731

    def pair(f):
        u2 = lambda z1, z2: s * (c * z1 + math.sqrt(1 - c * c) * z2)  # noqa: E731
        return dblquad(lambda z2, z1: f(s * z1) * f(u2(z1, z2)) * dens(z1, z2), -9, 9, -9, 9,
                       epsabs=1e-11, epsrel=1e-10)[0]  # fmt: skip

    assert (sw * pair(math.tanh) + sb) / q == pytest.approx(c, rel=1e-6)
    sech2 = lambda x: 1 / math.cosh(x) ** 2  # noqa: E731
    assert mf.chi_c == pytest.approx(sw * pair(sech2), rel=1e-6)
    assert mf.xi_c == pytest.approx(-1 / math.log(mf.chi_c), rel=1e-12)


def test_odd_activation_without_bias_decorrelates_fully():
    assert gg.theory.mean_field("tanh", 4.0, 0.0).c_star == pytest.approx(0.0, abs=1e-9)


# ---- edges ---------------------------------------------------------------------------------------


def test_relu_edges_are_explicit():
    exploding = gg.theory.mean_field("relu", 2.5, 0.1)
    assert math.isinf(exploding.q_star) and exploding.chi_1 == pytest.approx(1.25)
    assert exploding.phase == "chaotic" and "no finite q*" in exploding.note
    he = gg.theory.mean_field("relu", 2.0, 0.0)
    assert math.isnan(he.q_star) and he.phase == "critical" and math.isinf(he.xi_c)
    origin = gg.theory.mean_field("relu", 1.5, 0.0)
    assert origin.q_star == 0.0 and origin.chi_1 == pytest.approx(0.75) and "origin" in origin.note


def test_bad_input_raises_gradguard_error():
    with pytest.raises(GradguardError, match="unknown activation"):
        gg.theory.mean_field("swishy", 1.0, 0.0)
    with pytest.raises(GradguardError, match=">= 0"):
        gg.theory.mean_field("tanh", -1.0, 0.0)
    with pytest.raises(GradguardError, match=">= 0"):
        gg.theory.chi1("tanh", 1.0, float("nan"))


def test_callable_activation_matches_named():
    a = gg.theory.mean_field(np.tanh, 2.0, 0.1)
    b = gg.theory.mean_field("tanh", 2.0, 0.1)
    assert a.q_star == pytest.approx(b.q_star, rel=1e-8)
    assert a.chi_1 == pytest.approx(b.chi_1, rel=1e-7)
    t = gg.theory.mean_field(torch.tanh, 2.0, 0.1)  # torch callables work too
    assert t.chi_1 == pytest.approx(b.chi_1, rel=1e-7)


def test_to_dict_is_json_ready():
    import json

    json.dumps(gg.theory.mean_field("relu", 2.5, 0.1).to_dict())


# ---- simulation: wide random networks follow the theory --------------------------------------


@pytest.mark.parametrize(("sw", "sb"), [(1.5, 0.05), (1.2, 0.3), (3.0, 0.1)])
def test_backprop_gain_in_wide_tanh_net_matches_sqrt_chi1(sw, sb):
    width, depth, batch, burn_in = 1000, 50, 4, 5
    gen = torch.Generator().manual_seed(0)
    mf = gg.theory.mean_field("tanh", sw, sb)
    x = torch.randn(batch, width, generator=gen) * math.sqrt(mf.q_star)
    h = x.requires_grad_(True)
    outs, weights = [], []
    for layer in range(depth):
        w = torch.randn(width, width, generator=gen) * math.sqrt(sw / width)
        b = torch.randn(width, generator=gen) * math.sqrt(sb)
        weights.append((w, b))
        h = (torch.tanh(h) if layer else h) @ w.T + b  # h_l = W phi(h_{l-1}) + b
        outs.append(h)
    grads = torch.autograd.grad(h, outs, grad_outputs=torch.randn(h.shape, generator=gen))
    norms = torch.stack([g.norm() for g in grads]).double()
    log_ratio = torch.log(norms[:-1] / norms[1:])[burn_in:]  # ||g_{l-1}|| / ||g_l||
    measured = math.exp(log_ratio.mean().item())
    assert measured == pytest.approx(math.sqrt(mf.chi_1), rel=0.03)
    # the per-layer prediction from the actual weights tracks the measured pre-activation q_l
    pred = gg.theory.predict_layers(weights, "tanh", q0=x.pow(2).mean().item())
    q_meas = np.array([o.detach().pow(2).mean().item() for o in outs])
    assert pred.q[burn_in:].mean() == pytest.approx(q_meas[burn_in:].mean(), rel=0.03)
    np.testing.assert_allclose(pred.q[burn_in:], q_meas[burn_in:], rtol=0.15)
    assert np.exp(np.log(pred.gain[burn_in + 1 :]).mean()) == pytest.approx(measured, rel=0.03)


def test_predict_layers_inputs():
    lin = torch.nn.Linear(50, 50)
    with torch.no_grad():
        lin.weight.normal_(0, math.sqrt(2 / 50))
        lin.bias.zero_()
    p = gg.theory.predict_layers([lin, lin], "relu", q0=1.0)
    sw = 50 * lin.weight.detach().double().pow(2).mean().item()
    assert p.sigma_w2[0] == pytest.approx(sw) and p.q[0] == pytest.approx(sw)
    assert p.q[1] == pytest.approx(sw * sw / 2) and math.isnan(p.chi_1[0])
    with pytest.raises(GradguardError):
        gg.theory.predict_layers([], "relu", q0=1.0)
    with pytest.raises(GradguardError):
        gg.theory.predict_layers([("a", "b", "c")], "relu", q0=1.0)


# ---- CLI -------------------------------------------------------------------------------------------


def test_cli_theory_table_and_json(capsys):
    from gradguard.cli import main

    assert main(["theory", "tanh", "--sigma-w2", "1.5", "--sigma-b2", "0.05"]) == 0
    out = capsys.readouterr().out
    mf = gg.theory.mean_field("tanh", 1.5, 0.05)
    assert "ordered" in out and f"{mf.chi_1:.6g}" in out and "critical_sigma_w2" in out
    assert main(["theory", "relu", "--sigma-w2", "2.5", "--sigma-b2", "0.1", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["q_star"] == "inf" and data["chi_1"] == pytest.approx(1.25)
    assert data["critical_sigma_w2"] == pytest.approx(2.0) and data["note"]
    assert (
        main(["theory", "leaky_relu", "--negative-slope", "0.2", "--sigma-w2", "1", "--json"]) == 0
    )
    assert json.loads(capsys.readouterr().out)["chi_1"] == pytest.approx(0.5 * (1 + 0.04))


def test_cli_theory_plot(tmp_path, capsys):
    from gradguard.cli import main

    png = tmp_path / "phase.png"
    assert main(["theory", "relu", "--sigma-w2", "2", "--plot", str(png), "--json"]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(capsys.readouterr().out)["plot"] == str(png)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["theory", "swish2"], "unknown activation"),
        (["theory", "tanh", "--sigma-w2", "-1"], ">= 0"),
        (["theory", "tanh", "--sigma-b2", "-0.1"], ">= 0"),
    ],
)
def test_cli_theory_bad_input_exit_2(capsys, argv, message):
    from gradguard.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("gradguard: error: ") and message in err


def test_names_match_the_cli_help_and_the_class_name_is_unique():
    """The theory's names are what `gradguard theory --help` lists; its class is ActivationFn."""
    import argparse

    from gradguard.commands import theory as cmd

    parser = argparse.ArgumentParser()
    cmd.register(parser.add_subparsers())
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    help_text = next(a.help for a in sub.choices["theory"]._actions if a.dest == "activation")
    assert help_text is not None
    assert [n.strip() for n in help_text.replace(" or ", ", ").split(",")] == list(
        gg.theory.ACTIVATION_NAMES
    )
    assert tuple(ALL) == gg.theory.ACTIVATION_NAMES
    assert isinstance(resolve_activation("tanh"), gg.theory.ActivationFn)
    assert not hasattr(gg.theory, "Activation")
