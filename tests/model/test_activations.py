"""The activation table: every kind's bounds, init gain and theory function agree with torch."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from gradguard.diagnosis.knowledge import activation_family
from gradguard.model.activations import (
    ACTIVATION_BOUNDS,
    ACTIVATION_KINDS,
    ACTIVATION_TABLE,
    DYING,
    RELU_LIKE,
    SATURATING,
    ActivationKind,
    activation_bounds,
    family,
    kind_of,
    theory_spec,
)
from gradguard.model.schemes import Scheme
from gradguard.theory import ACTIVATION_NAMES, resolve_activation

KINDS = list(ACTIVATION_TABLE.values())
_ARGS: dict[str, tuple[Any, ...]] = {"Threshold": (0.1, 0.0)}  # no default constructor


def _module(kind: ActivationKind) -> nn.Module:
    module: nn.Module = getattr(nn, kind.name)(*_ARGS.get(kind.name, ()))
    return module.double().eval()  # eval: RReLU uses its fixed mean slope


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.name)
def test_bounds_are_the_output_range_on_a_wide_input(kind: ActivationKind) -> None:
    x = torch.linspace(-1e4, 1e4, 200_001, dtype=torch.float64)
    with torch.no_grad():
        y = _module(kind)(x)
    lo, hi = float(y.min()), float(y.max())
    if kind.bounds is None:
        assert max(abs(lo), abs(hi)) > 100, (kind.name, lo, hi)  # unbounded on one side
        return
    blo, bhi = kind.bounds
    for bound, seen, inside in ((blo, lo, lo >= blo), (bhi, hi, hi <= bhi)):
        assert inside, (kind.name, bound, seen)
        if math.isfinite(bound):
            assert seen == pytest.approx(bound, abs=1e-3), (kind.name, bound, seen)
        else:
            assert abs(seen) > 100, (kind.name, seen)  # it runs off to that side


# torch.nn.init.calculate_gain knows these activations by name
_TORCH_GAIN = {
    "ReLU": "relu",
    "LeakyReLU": "leaky_relu",
    "Tanh": "tanh",
    "Sigmoid": "sigmoid",
    "SELU": "selu",
}


@pytest.mark.parametrize("name", sorted(_TORCH_GAIN))
def test_init_gain_is_torchs_except_selu(name: str) -> None:
    kind = ACTIVATION_TABLE[name]
    module = nn.LeakyReLU(0.2) if name == "LeakyReLU" else _module(kind)
    assert kind.nonlinearity is not None
    slope = kind.params_of(module).get("negative_slope")
    gain = nn.init.calculate_gain(kind.nonlinearity, slope)  # type: ignore[arg-type]
    torch_gain = nn.init.calculate_gain(_TORCH_GAIN[name], slope)  # type: ignore[arg-type]
    if name == "SELU":
        # LeCun init (Var(W) = 1/fan_in) is what SELU's self-normalisation needs; torch's 3/4
        # trades that fixed point away, and its docs say to pass 'linear' for SELU.
        assert gain == 1.0 and torch_gain == 0.75
    else:
        assert gain == pytest.approx(torch_gain)


def test_every_gain_and_scheme_is_one_torch_and_gg_init_understand() -> None:
    for kind in KINDS:
        if kind.nonlinearity is not None:
            assert nn.init.calculate_gain(kind.nonlinearity, 0.01) > 0  # type: ignore[arg-type]
        assert kind.scheme is (Scheme.XAVIER if kind.family == SATURATING else Scheme.HE)


@pytest.mark.parametrize("kind", [k for k in KINDS if k.theory], ids=lambda k: k.name)
def test_theory_name_resolves_to_the_same_function(kind: ActivationKind) -> None:
    assert kind.theory in ACTIVATION_NAMES
    module = _module(kind)
    spec = theory_spec(module)
    assert spec is not None and spec[0] == kind.theory
    fn = resolve_activation(spec[0], **spec[1])
    x = np.linspace(-6.0, 6.0, 241)
    with torch.no_grad():
        want = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(fn.fn(x), want, rtol=1e-6, atol=1e-7)


def test_theory_spec_only_for_the_exact_function() -> None:
    assert theory_spec(nn.LeakyReLU(0.2)) == ("leaky_relu", {"negative_slope": 0.2})
    assert theory_spec(nn.ELU(0.5)) == ("elu", {"alpha": 0.5})
    assert theory_spec(nn.GELU(approximate="tanh")) is None
    assert theory_spec(nn.Hardtanh(-2.0, 2.0)) is None
    assert theory_spec(nn.ReLU6()) is None  # a Hardtanh subclass, not hard_tanh
    assert theory_spec(nn.Identity()) is None and theory_spec(None) is None


def test_views_and_lookups() -> None:
    assert frozenset(ACTIVATION_TABLE) == ACTIVATION_KINDS
    assert ACTIVATION_BOUNDS["Tanh"] == (-1.0, 1.0) and "ReLU" not in ACTIVATION_BOUNDS
    assert activation_bounds(nn.LogSigmoid()) is None  # one side infinite: no saturation
    assert activation_bounds(nn.Hardtanh(-2.0, 3.0)) == (-2.0, 3.0)
    assert activation_bounds(nn.ReLU6()) == (0.0, 6.0)

    class MyReLU(nn.ReLU):
        pass

    assert kind_of(MyReLU()) is ACTIVATION_TABLE["ReLU"]  # a subclass is its base kind
    assert kind_of(nn.ReLU6()) is ACTIVATION_TABLE["ReLU6"]  # not its base, Hardtanh
    assert kind_of("nn.LeakyReLU") is kind_of("leaky_relu") is ACTIVATION_TABLE["LeakyReLU"]
    assert kind_of("hard_tanh") is ACTIVATION_TABLE["Hardtanh"]
    assert family("swish") == RELU_LIKE and family("relu6") == DYING and family("erf") is None
    for kind in KINDS:  # the knowledge base reads the same families
        assert activation_family(kind.name) == kind.family == family(_module(kind))
