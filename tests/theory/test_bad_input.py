"""Theory inputs that used to slip through (issue 13, item 7), and the huge-variance answer."""

from __future__ import annotations

import math

import pytest

from gradguard.errors import GradguardError
from gradguard.theory import mean_field, resolve_activation


@pytest.mark.parametrize(
    ("name", "params", "match"),
    [
        ("leaky_relu", {"negative_slope": math.nan}, "finite"),
        ("leaky_relu", {"negative_slope": math.inf}, "finite"),
        ("elu", {"alpha": math.nan}, "finite"),
        ("elu", {"alpha": -math.inf}, "finite"),
        ("tanh", {"alpha": 1.0}, "takes no parameter 'alpha'"),
        ("leaky_relu", {"alpha": 1.0}, "it takes negative_slope"),
    ],
)
def test_bad_activation_parameters(name: str, params: dict, match: str) -> None:
    with pytest.raises(GradguardError, match=match):
        resolve_activation(name, **params)


@pytest.mark.parametrize("sw", [1e20, 1e60, 1e100])
def test_bounded_activation_at_huge_sigma_w2_is_chaotic(sw: float) -> None:
    """q* ~ sigma_w2 (tanh^2 -> 1) and chi_1 = sigma_w2 E[tanh'(sqrt(q*) z)^2]
    -> sigma_w2 (4/3) / sqrt(2 pi q*): the integral of sech^4 is 4/3."""
    mf = mean_field("tanh", sw, 0.0)
    assert mf.phase == "chaotic"
    assert mf.q_star == pytest.approx(sw, rel=1e-9)
    assert mf.chi_1 == pytest.approx(sw * (4 / 3) / math.sqrt(2 * math.pi * sw), rel=1e-6)


def test_asymptote_meets_the_quadrature() -> None:
    """Below the switch (q* < 1e12) the quadrature answers; the asymptote agrees there."""
    mf = mean_field("tanh", 1e11, 0.0)
    assert mf.chi_1 == pytest.approx(1e11 * (4 / 3) / math.sqrt(2 * math.pi * mf.q_star), rel=1e-6)


@pytest.mark.parametrize("sw", [1e101, 1e300, math.inf, math.nan])
def test_variances_beyond_the_solver_are_refused(sw: float) -> None:
    with pytest.raises(GradguardError, match="sigma_w2"):
        mean_field("tanh", sw, 0.0)
