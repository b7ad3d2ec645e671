"""Activation functions as the mean-field theory sees them: phi, phi', kinks, closed-form hints.

A theory activation is a frozen :class:`ActivationFn`; :func:`resolve_activation` turns a name
(``"tanh"``, ``"leaky_relu"``...), an :class:`ActivationFn` or any elementwise callable into one.
Only numpy is needed except for ``erf`` and ``gelu``, which use ``scipy.special`` when it is
installed (``pip install gradguard[theory]``) and a slower pure-Python erf otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gradguard.errors import GradguardError

__all__ = ["ActivationFn", "ActivationLike", "resolve_activation", "ACTIVATION_NAMES"]

Array = np.ndarray
Fn = Callable[[Array], Array]

# SELU constants (Klambauer et al. 2017), as in torch.nn.SELU.
_SELU_LAMBDA = 1.0507009873554804934193349852946
_SELU_ALPHA = 1.6732632423543772848170429916717


@dataclass(frozen=True)
class ActivationFn:
    """An elementwise nonlinearity for the mean-field maps.

    Args:
        name: short name shown in reports, e.g. ``"tanh"`` or ``"leaky_relu(0.01)"``.
        fn: phi, vectorised over numpy float64 arrays.
        deriv: phi', vectorised (at a kink either one-sided value; it has measure zero).
        kinks: points where phi or phi' is not smooth; quadrature splits there (and at 0).
        homogeneous: ``E[phi(z)^2]`` for positively homogeneous phi (phi(a x) = a phi(x), a > 0:
            relu, leaky_relu, linear), which makes the length map linear; else None.
        closed_form: key of the closed-form Gaussian integrals in ``_gauss`` (relu, leaky_relu,
            linear, erf), else None (numerical integration).
        params: the parameters, e.g. ``{"negative_slope": 0.01}``.
    """

    name: str
    fn: Fn = field(repr=False, compare=False)
    deriv: Fn = field(repr=False, compare=False)
    kinks: tuple[float, ...] = ()
    homogeneous: float | None = None
    closed_form: str | None = None
    params: tuple[tuple[str, float], ...] = ()

    @property
    def param(self) -> dict[str, float]:
        return dict(self.params)


# What the theory functions accept as an activation: a name, an ActivationFn or a callable.
ActivationLike = str | ActivationFn | Callable[..., Any]


def _erf() -> Fn:
    try:
        from scipy.special import erf

        return erf  # type: ignore[no-any-return]
    except ImportError:  # pragma: no cover - scipy is in the `theory` extra
        vec = np.vectorize(math.erf, otypes=[float])
        return lambda x: vec(x)


def _normal_cdf(x: Array) -> Array:
    return 0.5 * (1.0 + _erf()(x / math.sqrt(2.0)))


def _sigmoid(x: Array) -> Array:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _elu_fn(alpha: float, scale: float = 1.0) -> tuple[Fn, Fn]:
    def fn(x: Array) -> Array:
        return scale * np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0.0)))

    def deriv(x: Array) -> Array:
        return scale * np.where(x > 0, 1.0, alpha * np.exp(np.minimum(x, 0.0)))

    return fn, deriv


def _build(name: str, params: dict[str, float]) -> ActivationFn:
    if name == "tanh":
        return ActivationFn("tanh", np.tanh, lambda x: 1.0 - np.tanh(x) ** 2, kinks=(0.0,))
    if name == "sigmoid":
        return ActivationFn(
            "sigmoid", _sigmoid, lambda x: _sigmoid(x) * (1.0 - _sigmoid(x)), kinks=(0.0,)
        )
    if name == "relu":
        return ActivationFn(
            "relu",
            lambda x: np.maximum(x, 0.0),
            lambda x: (x > 0).astype(float),
            kinks=(0.0,),
            homogeneous=0.5,
            closed_form="relu",
        )
    if name == "leaky_relu":
        a = float(params.get("negative_slope", 0.01))
        return ActivationFn(
            f"leaky_relu({a:g})",
            lambda x: np.where(x > 0, x, a * x),
            lambda x: np.where(x > 0, 1.0, a),
            kinks=(0.0,),
            homogeneous=0.5 * (1.0 + a * a),
            closed_form="leaky_relu",
            params=(("negative_slope", a),),
        )
    if name == "linear":
        return ActivationFn(
            "linear",
            lambda x: np.asarray(x, dtype=float),
            lambda x: np.ones_like(x, dtype=float),
            homogeneous=1.0,
            closed_form="linear",
        )
    if name == "elu":
        alpha = float(params.get("alpha", 1.0))
        fn, deriv = _elu_fn(alpha)
        return ActivationFn(f"elu({alpha:g})", fn, deriv, kinks=(0.0,), params=(("alpha", alpha),))
    if name == "selu":
        fn, deriv = _elu_fn(_SELU_ALPHA, _SELU_LAMBDA)
        return ActivationFn("selu", fn, deriv, kinks=(0.0,))
    if name == "gelu":
        c = 1.0 / math.sqrt(2.0 * math.pi)
        return ActivationFn(
            "gelu",
            lambda x: x * _normal_cdf(x),
            lambda x: _normal_cdf(x) + x * c * np.exp(-0.5 * x * x),
            kinks=(0.0,),
        )
    if name == "erf":
        c = 2.0 / math.sqrt(math.pi)
        return ActivationFn(
            "erf",
            lambda x: _erf()(x),
            lambda x: c * np.exp(-x * x),
            kinks=(0.0,),
            closed_form="erf",
        )
    if name == "hard_tanh":
        return ActivationFn(
            "hard_tanh",
            lambda x: np.clip(x, -1.0, 1.0),
            lambda x: (np.abs(x) < 1.0).astype(float),
            kinks=(-1.0, 0.0, 1.0),
        )
    raise AssertionError(name)  # pragma: no cover


_ALIASES = {
    "identity": "linear",
    "none": "linear",
    "leakyrelu": "leaky_relu",
    "hardtanh": "hard_tanh",
    "logistic": "sigmoid",
}
ACTIVATION_NAMES = (
    "tanh",
    "sigmoid",
    "relu",
    "leaky_relu",
    "elu",
    "gelu",
    "selu",
    "erf",
    "hard_tanh",
    "linear",
)


def _from_callable(fn: Callable[..., Any], name: str) -> ActivationFn:
    """Wrap an elementwise callable (numpy or torch); phi' by central differences."""

    def call(x: Array) -> Array:
        x = np.asarray(x, dtype=float)
        try:
            y = fn(x)
            out = np.asarray(y, dtype=float)
        except Exception:
            import torch

            with torch.no_grad():
                out = fn(torch.from_numpy(np.ascontiguousarray(x))).double().numpy()
        if out.shape != x.shape:
            raise GradguardError(
                f"activation {name!r} changed the shape {x.shape} -> {out.shape}; pass an "
                "elementwise function such as np.tanh or torch.tanh"
            )
        return out

    def deriv(x: Array) -> Array:
        # second-order differences that never straddle 0 (where a callable's kink usually is):
        # central away from 0, one-sided (x, x+-h, x+-2h) within 2h of it
        x = np.asarray(x, dtype=float)
        h = 1e-5 * np.maximum(1.0, np.abs(x))
        central = (call(x + h) - call(x - h)) / (2.0 * h)
        s = np.where(x < 0, -1.0, 1.0) * h
        one_sided = (-3.0 * call(x) + 4.0 * call(x + s) - call(x + 2.0 * s)) / (2.0 * s)
        return np.where(np.abs(x) < 2.0 * h, one_sided, central)

    try:
        probe = call(np.linspace(-2.0, 2.0, 5))
    except GradguardError:
        raise
    except Exception as e:
        raise GradguardError(
            f"could not evaluate activation {name!r} on a numpy array or a torch tensor ({e}); "
            "pass an elementwise function such as np.tanh, or a name like 'tanh'"
        ) from e
    if not np.all(np.isfinite(probe)):
        raise GradguardError(
            f"activation {name!r} is not finite on [-2, 2]; pass a finite function"
        )
    return ActivationFn(name, call, deriv, kinks=(0.0,))


_PARAMS = {"leaky_relu": ("negative_slope",), "elu": ("alpha",)}  # what a named activation takes


def _checked_params(name: str, params: dict[str, float]) -> dict[str, float]:
    """Each parameter one that ``name`` takes, and a finite number."""
    takes = _PARAMS.get(name, ())
    for key, value in params.items():
        if key not in takes:
            raise GradguardError(
                f"{name} takes no parameter {key!r}"
                + (f"; it takes {', '.join(takes)}" if takes else "; leave it out")
            )
        try:
            v = float(value)
        except (TypeError, ValueError):
            v = math.nan
        if not math.isfinite(v):
            raise GradguardError(
                f"{key}={value!r} must be a finite number; "
                f"e.g. {key}={0.01 if key == 'negative_slope' else 1.0}"
            )
    return params


def resolve_activation(spec: ActivationLike, **params: float) -> ActivationFn:
    """Turn a name, an :class:`ActivationFn` or an elementwise callable into an :class:`ActivationFn`.

    Args:
        spec: one of ``ACTIVATION_NAMES`` (case-insensitive; ``leaky_relu`` takes
            ``negative_slope=0.01``, ``elu`` takes ``alpha=1.0``), an :class:`ActivationFn`, or a
            callable mapping a float array (numpy, else torch) elementwise.
        **params: parameters of a named activation.

    Returns:
        The :class:`ActivationFn`.

    Raises:
        GradguardError: unknown name or a callable that cannot be evaluated.

    >>> resolve_activation("leaky_relu", negative_slope=0.1).name
    'leaky_relu(0.1)'
    """
    if isinstance(spec, ActivationFn):
        return spec
    if isinstance(spec, str):
        key = spec.strip().lower().replace("-", "_")
        key = _ALIASES.get(key, key)
        if key not in ACTIVATION_NAMES:
            raise GradguardError(
                f"unknown activation {spec!r}; use one of {', '.join(ACTIVATION_NAMES)} "
                "or pass an elementwise callable"
            )
        return _build(key, _checked_params(key, params))
    if callable(spec):
        name = getattr(spec, "__name__", None) or type(spec).__name__
        return _from_callable(spec, str(name))
    raise GradguardError(
        f"activation must be a name, an ActivationFn or a callable, got {type(spec).__name__}; "
        f"use one of {', '.join(ACTIVATION_NAMES)}"
    )
