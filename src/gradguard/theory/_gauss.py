"""Gaussian integrals of an activation: closed forms where they exist, split quadrature otherwise.

With u ~ N(0, q) and (u1, u2) ~ N(0, q [[1, c], [c, 1]]) the mean-field maps need

    m2(q)    = E[phi(u)^2]             (length map)
    dm2(q)   = d m2 / dq = E[phi(u) phi'(u) u] / q   (slope of the length map; Stein's lemma)
    d2(q)    = E[phi'(u)^2]            (chi_1)
    k(q, c)  = E[phi(u1) phi(u2)]      (correlation map)
    kd(q, c) = E[phi'(u1) phi'(u2)]    (its slope, chi_c)

Numerical integration is composite Gauss-Legendre on [-L, L] (L = 13 standard deviations, tail
mass < 1e-37), split at the activation's kinks and at 0, each piece refined geometrically towards
both of its ends. That is exact at kinks (relu, hard_tanh) where Gauss-Hermite converges slowly, and
it resolves a steep tanh at large q (features of width 1/sqrt(q) near 0). Everything is vectorised:
rows of (mean, std) are integrated at once.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from gradguard.theory.activations import ActivationFn

__all__ = ["m2", "dm2", "d2", "k", "kd", "gauss_expect", "gauss_hermite_expect"]

Array = np.ndarray
ArrayLike = np.ndarray | float
_L = 13.0  # half-width of the integration range in standard deviations
_SQ2PI = math.sqrt(2.0 * math.pi)


@lru_cache(maxsize=4)
def _unit_rule(n: int = 12, eps: float = 1e-7) -> tuple[Array, Array]:
    """Nodes/weights on [0, 1], refined geometrically towards 0 and 1 (weights sum to 1)."""
    edges = [0.0]
    x = eps
    while x < 0.5:
        edges.append(x)
        x *= 2.0
    half = np.array([*edges, 0.5])
    edges_all = np.concatenate([half, 1.0 - half[-2::-1]])
    g, w = np.polynomial.legendre.leggauss(n)
    a, b = edges_all[:-1, None], edges_all[1:, None]
    nodes = (a + b) / 2 + (b - a) / 2 * g[None, :]
    weights = (b - a) / 2 * w[None, :]
    return nodes.ravel(), weights.ravel()


def gauss_expect(
    f, mean: Array, std: Array, anchors: tuple[float, ...] = (0.0,), n: int = 12
) -> Array:
    """E[f(mean + std * z)], z ~ N(0, 1), row by row.

    Args:
        f: elementwise function of a float64 array.
        mean, std: arrays of the same shape (R,) (std >= 0).
        anchors: points in u = mean + std z where f is not smooth (the range is split there).
        n: Gauss-Legendre nodes per sub-interval (12: ~1e-15 relative on smooth pieces; 8: ~1e-10).

    Returns:
        Array (R,) of expectations.
    """
    mean = np.atleast_1d(np.asarray(mean, dtype=float))
    std = np.atleast_1d(np.asarray(std, dtype=float))
    mean, std = np.broadcast_arrays(mean, std)
    t, w = _unit_rule(n)
    with np.errstate(divide="ignore", invalid="ignore"):
        cuts = [(a - mean) / std for a in anchors]
    cuts_arr = np.nan_to_num(np.stack(cuts, axis=-1) if cuts else np.zeros(mean.shape + (0,)))
    cuts_arr = np.clip(cuts_arr, -_L, _L)
    cuts_arr.sort(axis=-1)
    ends = np.concatenate(
        [np.full(mean.shape + (1,), -_L), cuts_arr, np.full(mean.shape + (1,), _L)], axis=-1
    )  # (R, S+1)
    lo, hi = ends[..., :-1, None], ends[..., 1:, None]  # (R, S, 1)
    z = lo + (hi - lo) * t  # (R, S, M)
    wz = (hi - lo) * w * np.exp(-0.5 * z * z) / _SQ2PI
    u = mean[..., None, None] + std[..., None, None] * z
    return np.asarray((f(u) * wz).sum(axis=(-1, -2)))


def gauss_hermite_expect(f, q: float, n: int = 100) -> float:
    """E[f(sqrt(q) z)] by n-point Gauss-Hermite (fast for smooth f, slow at kinks)."""
    x, w = np.polynomial.hermite_e.hermegauss(n)
    return float((f(math.sqrt(q) * x) * w).sum() / _SQ2PI)


def _anchors(act: ActivationFn) -> tuple[float, ...]:
    return tuple(sorted({0.0, *act.kinks}))


def _relu_J(c: Array) -> Array:
    c = np.clip(c, -1.0, 1.0)
    return (np.sqrt(1.0 - c * c) + (math.pi - np.arccos(c)) * c) / (2.0 * math.pi)


def _relu_P(c: Array) -> Array:
    return (math.pi - np.arccos(np.clip(c, -1.0, 1.0))) / (2.0 * math.pi)


def m2(act: ActivationFn, q: ArrayLike) -> Array:
    """E[phi(u)^2], u ~ N(0, q), for each q."""
    q = np.atleast_1d(np.asarray(q, dtype=float))
    if act.homogeneous is not None:
        return act.homogeneous * q
    if act.closed_form == "erf":
        return 2.0 / math.pi * np.arcsin(2.0 * q / (1.0 + 2.0 * q))
    return gauss_expect(lambda u: act.fn(u) ** 2, 0.0 * q, np.sqrt(q), _anchors(act))


def dm2(act: ActivationFn, q: ArrayLike) -> Array:
    """d/dq E[phi(u)^2] = E[phi(u) phi'(u) u] / q (q > 0)."""
    q = np.atleast_1d(np.asarray(q, dtype=float))
    if act.homogeneous is not None:
        return act.homogeneous + 0.0 * q
    if act.closed_form == "erf":
        return 4.0 / math.pi / ((1.0 + 2.0 * q) * np.sqrt(1.0 + 4.0 * q))
    e = gauss_expect(lambda u: act.fn(u) * act.deriv(u) * u, 0.0 * q, np.sqrt(q), _anchors(act))
    return e / q


def d2(act: ActivationFn, q: ArrayLike) -> Array:
    """E[phi'(u)^2], u ~ N(0, q)."""
    q = np.atleast_1d(np.asarray(q, dtype=float))
    if act.closed_form == "relu":
        return 0.5 + 0.0 * q
    if act.closed_form in ("leaky_relu", "linear"):
        return act.homogeneous + 0.0 * q  # type: ignore[operator]
    if act.closed_form == "erf":
        return 4.0 / math.pi / np.sqrt(1.0 + 4.0 * q)
    return gauss_expect(lambda u: act.deriv(u) ** 2, 0.0 * q, np.sqrt(q), _anchors(act))


def _pair(f, g, act: ActivationFn, q: float, c: ArrayLike) -> Array:
    """E[f(u1) g(u2)] for one q and each c in the array, by nested split quadrature."""
    c = np.atleast_1d(np.asarray(c, dtype=float))
    anchors = _anchors(act)
    sq = math.sqrt(q)
    t, w = _unit_rule(8)  # 2-D cost grows as n^2; 8 nodes still give ~1e-10 relative
    out = np.empty_like(c)
    # outer integral over z1: split at 0 and the kinks of f(sqrt(q) z1)
    cuts = sorted({np.clip(a / sq, -_L, _L) for a in anchors} | {-_L, _L})
    lo, hi = np.array(cuts[:-1])[:, None], np.array(cuts[1:])[:, None]
    z1 = (lo + (hi - lo) * t).ravel()
    w1 = ((hi - lo) * w).ravel() * np.exp(-0.5 * z1 * z1) / _SQ2PI
    f1 = f(sq * z1) * w1
    for i, ci in enumerate(c):
        s = math.sqrt(max(1.0 - ci * ci, 0.0))
        inner = gauss_expect(g, sq * ci * z1, np.full_like(z1, sq * s), anchors, n=8)
        out[i] = float((f1 * inner).sum())
    return out


def k(act: ActivationFn, q: float, c: ArrayLike) -> Array:
    """E[phi(u1) phi(u2)] with Var u = q and correlation c."""
    c = np.atleast_1d(np.asarray(c, dtype=float))
    if act.closed_form == "relu":
        return q * _relu_J(c)
    if act.closed_form == "leaky_relu":
        a = act.param["negative_slope"]
        return q * (a * a * c + a * (1 - a) * c + (1 - a) ** 2 * _relu_J(c))
    if act.closed_form == "linear":
        return q * c
    if act.closed_form == "erf":
        return 2.0 / math.pi * np.arcsin(np.clip(2.0 * q * c / (1.0 + 2.0 * q), -1.0, 1.0))
    return _pair(act.fn, act.fn, act, q, c)


def kd(act: ActivationFn, q: float, c: ArrayLike) -> Array:
    """E[phi'(u1) phi'(u2)] with Var u = q and correlation c."""
    c = np.atleast_1d(np.asarray(c, dtype=float))
    if act.closed_form == "relu":
        return _relu_P(c)
    if act.closed_form == "leaky_relu":
        a = act.param["negative_slope"]
        return a * a + a * (1 - a) + (1 - a) ** 2 * _relu_P(c)
    if act.closed_form == "linear":
        return np.ones_like(c)
    if act.closed_form == "erf":
        return 4.0 / math.pi / np.sqrt((1.0 + 2.0 * q) ** 2 - 4.0 * q * q * c * c)
    return _pair(act.deriv, act.deriv, act, q, c)
